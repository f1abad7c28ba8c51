"""Control replicas and workers over a real redis-server, real model, real speech (ws transport).

Two control replicas (ControlServer in cluster mode) and workers (agent.worker) in this process,
each with its own Redis connection: a session survives its socket moving between replicas, a replica
restart and a Redis outage; workers' capacity is respected.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from agent.asr import AsrEngine
from agent.config import PipelineConfig
from agent.worker import TranscriptionWorker
from control.cluster_store import ClusterStore
from control.server import ControlServer
from control_harness import RawClient, ServerHandle, make_settings
from redis_server import RedisServer
from roomscribe.client.audio_files import read_wav
from speech_samples import JFK, JFK_TEXT, LIBRI, LIBRI_TEXT, ROOT, pcm_frames, silence, wer

pytestmark = pytest.mark.timeout(180)


class Cluster:
    """Control replicas and workers sharing one Redis key prefix (and one control secret)."""

    def __init__(self, redis_url: str, prefix: str, engine: AsrEngine, http: aiohttp.ClientSession) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.engine = engine
        self.http = http
        self.secret = secrets.token_urlsafe(32)
        self.replicas: list[ControlServer] = []
        self.workers: list[TranscriptionWorker] = []
        self._stores: list[ClusterStore] = []

    def _store(self) -> ClusterStore:
        store = ClusterStore.from_url(self.redis_url, prefix=self.prefix)
        self._stores.append(store)
        return store

    async def replica(self, **overrides: Any) -> ServerHandle:
        overrides.setdefault("grace_period_s", 30.0)
        settings = make_settings(control_secret=self.secret, **overrides)
        server = ControlServer(settings, cluster=self._store())
        await server.start()
        self.replicas.append(server)
        return ServerHandle(server, self.http)

    async def worker(self, capacity: int = 4) -> TranscriptionWorker:
        worker = TranscriptionWorker(
            self._store(), self.engine, PipelineConfig(), worker_id=f"w{len(self.workers) + 1}", capacity=capacity
        )
        await worker.start()
        self.workers.append(worker)
        return worker

    async def close(self) -> None:
        for server in self.replicas:
            await server.stop()
        for worker in self.workers:
            await worker.stop()
        for store in self._stores:
            await store.close()


@pytest.fixture
async def cluster(redis_server: RedisServer, key_prefix: str, engine: AsrEngine) -> AsyncIterator[Cluster]:
    async with aiohttp.ClientSession() as http:
        c = Cluster(redis_server.url, key_prefix, engine, http)
        try:
            yield c
        finally:
            await c.close()


async def stream(client: RawClient, frames: list[bytes], speed: float = 8.0, frame_ms: int = 20) -> None:
    for frame in frames:
        await client.ws.send_bytes(frame)
        await asyncio.sleep(frame_ms / 1000 / speed)


def speech(path: Any) -> np.ndarray:
    return np.concatenate([read_wav(path).samples, silence(1.0)])


def numbered(client: RawClient) -> list[dict[str, Any]]:
    return [e for e in client.events if "seq" in e]


async def test_a_session_runs_on_a_worker_and_ends_cleanly(cluster: Cluster) -> None:
    replica = await cluster.replica()
    await cluster.worker()
    client = await replica.connect("alice")
    await client.send(type="session.start", id="s", transport="ws")
    ready = await client.wait_type("session.ready", id="s")
    await stream(client, pcm_frames(speech(JFK)))
    store = cluster._stores[0]
    await store.redis.config_set("notify-keyspace-events", "Eg")
    async with store.redis.pubsub() as deletions:
        await deletions.subscribe("__keyevent@0__:del")
        await client.send(type="session.stop", id="stop")
        await client.wait_type("session.ended")
        session_key = f"{store.prefix}session:{ready['session_id']}".encode()
        async with asyncio.timeout(10):  # its state leaves Redis once it ended
            while (message := await deletions.get_message(ignore_subscribe_messages=True, timeout=5)) is None or (
                message["data"] != session_key
            ):
                pass
    finals = client.of_type("transcript.final")
    assert wer(JFK_TEXT, " ".join(f["text"] for f in finals)) <= 0.10
    seqs = [e["seq"] for e in numbered(client)]
    assert seqs == list(range(1, len(seqs) + 1))
    await client.close()


async def test_a_session_resumes_on_another_replica_with_every_final_once(cluster: Cluster) -> None:
    replica_a = await cluster.replica()
    replica_b = await cluster.replica()
    await cluster.worker()
    await cluster.worker()
    first = await replica_a.connect("bob")
    await first.send(type="session.start", transport="ws")
    ready = await first.wait_type("session.ready")
    await stream(first, pcm_frames(speech(LIBRI)))
    await first.wait_type("speech.end")  # the first utterance closed; its final may or may not have come
    await first.close()
    last_seq = max((e["seq"] for e in numbered(first)), default=0)

    second = await replica_b.connect("bob")
    resume = {"session_id": ready["session_id"], "last_seq": last_seq}
    await second.send(type="session.start", id="r", resume=resume)
    resumed = await second.wait_type("session.ready", id="r")
    assert resumed["resumed"] is True and resumed["session_id"] == ready["session_id"]
    sent = speech(LIBRI).astype("<i2").tobytes()
    rest = sent[resumed["audio_bytes_received"] :]  # what the server had not taken when the socket dropped
    await stream(second, [rest[i : i + 640] for i in range(0, len(rest), 640)] + pcm_frames(speech(JFK)))
    await second.send(type="session.stop")
    await second.wait_type("session.ended")

    events = numbered(first) + numbered(second)
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs)), "an event arrived twice or out of order"
    finals = [e for e in events if e["type"] == "transcript.final"]
    assert len({f["utterance_id"] for f in finals}) == len(finals)
    assert wer(LIBRI_TEXT + " " + JFK_TEXT, " ".join(f["text"] for f in finals)) <= 0.10
    await second.close()


async def test_workers_capacity_is_respected_and_a_full_cluster_says_busy(cluster: Cluster) -> None:
    replica = await cluster.replica()
    await cluster.worker(capacity=1)
    await cluster.worker(capacity=1)
    clients = [await replica.connect(user) for user in ("u1", "u2", "u3")]
    for client in clients[:2]:
        await client.send(type="session.start", id="s", transport="ws")
        await client.wait_type("session.ready", id="s")
    assert sorted(w.state().active for w in cluster.workers) == [1, 1]
    await clients[2].send(type="session.start", id="s", transport="ws")
    busy = await clients[2].wait_type("error", id="s")
    assert busy["code"] == "server.busy" and busy["retry_after"] > 0
    # A freed slot takes the next session.
    await clients[0].send(type="session.stop", id="stop")
    await clients[0].wait_type("session.ended")
    async with asyncio.timeout(30):
        while True:
            await clients[2].send(type="session.start", id="again", transport="ws")
            reply = await clients[2].wait_for(lambda e: e.get("id") == "again")
            if reply["type"] == "session.ready":
                break
            assert reply["code"] == "server.busy"
            clients[2].events.remove(reply)
            await asyncio.sleep(0.5)  # the worker's next heartbeat says it has room again
    for client in clients:
        await client.close()


async def test_a_restarted_replica_resumes_and_replays_what_was_missed(cluster: Cluster) -> None:
    replica = await cluster.replica()
    await cluster.worker()
    first = await replica.connect("carol")
    await first.send(type="session.start", transport="ws")
    ready = await first.wait_type("session.ready")
    await stream(first, pcm_frames(speech(JFK)))
    await first.wait_type("speech.end")
    await first.close()
    # As if the client had kept only the first event: everything after it comes back from Redis.
    last_seq = min(e["seq"] for e in numbered(first) if e["type"] == "speech.start")
    await replica.server.stop()  # the replica goes away; the session stays in Redis

    restarted = await cluster.replica()
    second = await restarted.connect("carol")
    await second.send(type="session.start", id="r", resume={"session_id": ready["session_id"], "last_seq": last_seq})
    resumed = await second.wait_type("session.ready", id="r")
    # As a client does: resend what the server had not taken when the socket dropped.
    sent = speech(JFK).astype("<i2").tobytes()
    rest = sent[resumed["audio_bytes_received"] :]
    await stream(second, [rest[i : i + 640] for i in range(0, len(rest), 640)])
    await second.send(type="session.stop")
    await second.wait_type("session.ended")
    replayed = [e["seq"] for e in numbered(second)]
    assert replayed == sorted(set(replayed)) and all(seq > last_seq for seq in replayed)
    assert wer(JFK_TEXT, " ".join(f["text"] for f in second.of_type("transcript.final"))) <= 0.10
    await second.close()


async def test_redis_down_gives_coded_errors_and_the_cluster_recovers(
    engine: AsrEngine, key_prefix: str
) -> None:
    redis = RedisServer()
    redis.start()
    try:
        async with aiohttp.ClientSession() as http:
            c = Cluster(redis.url, key_prefix, engine, http)
            try:
                replica = await c.replica()
                await c.worker()
                client = await replica.connect("dave")
                await redis.astop()
                health = await http.get(replica.server.http_url + "/healthz")
                assert health.status == 503 and (await health.json())["redis"].startswith("unavailable")
                await client.send(type="session.start", id="s", transport="ws")
                error = await client.wait_type("error", id="s")
                assert error["code"] == "cluster.unavailable" and error["retry_after"] > 0
                await redis.astart()
                async with asyncio.timeout(30):
                    # Nothing announces Redis's return to a test: poll what a load balancer would.
                    while (await http.get(replica.server.http_url + "/healthz")).status != 200:  # noqa: ASYNC110
                        await asyncio.sleep(0.2)
                    while not await c._stores[0].workers():  # noqa: ASYNC110  # the worker's heartbeat is back
                        await asyncio.sleep(0.2)
                await client.send(type="session.start", id="s2", transport="ws")
                await client.wait_type("session.ready", id="s2")
                await stream(client, pcm_frames(speech(JFK)))
                await client.send(type="session.stop")
                await client.wait_type("session.ended")
                assert wer(JFK_TEXT, " ".join(f["text"] for f in client.of_type("transcript.final"))) <= 0.10
                await client.close()
            finally:
                await c.close()
    finally:
        redis.close()


async def test_a_killed_worker_s_session_continues_on_another_with_no_final_lost_or_repeated(
    engine: AsrEngine, tmp_path: Path
) -> None:
    """kill -9 of the worker process during speech: another worker takes the session over from the
    dead one's last checkpoint; the transcript is whole, every final once, seqs in order."""
    redis = RedisServer()
    redis.start()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ROOMSCRIBE_REDIS_URL": redis.url}
    doomed = subprocess.Popen(  # noqa: ASYNC220  # started once, before the loop has work; killed with a signal
        [sys.executable, "-m", "roomscribe.cli", "worker", "--id", "doomed", "--capacity", "4"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as http:
            c = Cluster(redis.url, "roomscribe:", engine, http)
            try:
                replica = await c.replica()
                store = c._stores[0]
                async with asyncio.timeout(60):  # the worker process loads its model, then heartbeats
                    while not await store.workers():  # noqa: ASYNC110  # its first heartbeat is the event; Redis has no push for a hash
                        await asyncio.sleep(0.2)
                client = await replica.connect("erin")
                await client.send(type="session.start", id="s", transport="ws")
                ready = await client.wait_type("session.ready", id="s")
                assert (await store.session(ready["session_id"])).worker == "doomed"  # type: ignore[union-attr]  # the session exists
                await c.worker()  # the survivor: it joins now, so the session went to the doomed one
                frames = pcm_frames(np.concatenate([speech(LIBRI), speech(JFK)]))
                half = len(frames) // 2
                await stream(client, frames[:half], speed=4.0)
                await client.wait_type("transcript.final")  # the doomed worker has been transcribing
                doomed.send_signal(signal.SIGKILL)
                await stream(client, frames[half:], speed=4.0)
                await client.send(type="session.stop", id="stop")
                await client.wait_type("session.ended", timeout=60)
                finals = client.of_type("transcript.final")
                assert len({f["utterance_id"] for f in finals}) == len(finals), "a final came twice"
                starts = [(e["utterance_id"]) for e in client.of_type("speech.start")]
                assert len(set(starts)) == len(starts)
                seqs = [e["seq"] for e in numbered(client)]
                assert seqs == list(range(1, len(seqs) + 1))
                times = [f["start"] for f in finals]
                assert times == sorted(times), "session times went back after the takeover"
                assert wer(LIBRI_TEXT + " " + JFK_TEXT, " ".join(f["text"] for f in finals)) <= 0.12
                await client.close()
            finally:
                await c.close()
    finally:
        if doomed.poll() is None:
            doomed.kill()
        doomed.wait()
        redis.close()


async def test_a_draining_worker_hands_its_session_over(cluster: Cluster) -> None:
    """SIGTERM on a worker (drain): it takes nothing new, settles what it has, and the session
    carries on on another worker with the whole transcript."""
    replica = await cluster.replica()
    draining = await cluster.worker()
    client = await replica.connect("frank")
    await client.send(type="session.start", id="s", transport="ws")
    await client.wait_type("session.ready", id="s")
    await cluster.worker()  # joins after the session started on the first one
    frames = pcm_frames(np.concatenate([speech(LIBRI), speech(JFK)]))
    half = len(frames) // 2
    await stream(client, frames[:half], speed=4.0)
    drain = asyncio.create_task(draining.drain())
    await stream(client, frames[half:], speed=4.0)
    await drain
    await client.send(type="session.stop", id="stop")
    await client.wait_type("session.ended", timeout=60)
    finals = client.of_type("transcript.final")
    assert len({f["utterance_id"] for f in finals}) == len(finals), "a final came twice"
    seqs = [e["seq"] for e in numbered(client)]
    assert seqs == list(range(1, len(seqs) + 1))
    assert wer(LIBRI_TEXT + " " + JFK_TEXT, " ".join(f["text"] for f in finals)) <= 0.12
    await client.close()


async def test_a_worker_whose_model_cannot_serve_the_language_refuses_it_with_a_coded_error(cluster: Cluster) -> None:
    replica = await cluster.replica()
    await cluster.worker()  # tiny.en: English only
    client = await replica.connect("lena")
    await client.send(type="session.start", id="de", transport="ws", language="de")
    error = await client.wait_type("error", id="de")
    assert error["code"] == "language.unsupported" and "English-only" in error["message"], error
    await client.send(type="session.start", id="en", transport="ws", language="en")
    await client.wait_type("session.ready", id="en")  # the socket stayed usable
    await client.close()


async def test_the_session_s_language_travels_to_its_worker(
    redis_server: RedisServer, key_prefix: str, base_engine: AsrEngine
) -> None:
    async with aiohttp.ClientSession() as http:
        cluster = Cluster(redis_server.url, key_prefix, base_engine, http)
        try:
            replica = await cluster.replica()
            await cluster.worker()
            client = await replica.connect("mia")
            await client.send(type="session.start", id="s", transport="ws", language="auto")
            await client.wait_type("session.ready", id="s")
            await stream(client, pcm_frames(speech(JFK)))
            await client.send(type="session.stop", id="stop")
            await client.wait_type("session.ended", timeout=150)
            finals = client.of_type("transcript.final")
            assert finals and all(f["language"] == "en" for f in finals), finals
            await client.close()
        finally:
            await cluster.close()
