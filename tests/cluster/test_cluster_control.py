"""Control replicas and workers over a real redis-server, real model, real speech (ws transport).

Two control replicas (ControlServer in cluster mode) and workers (agent.worker) in this process,
each with its own Redis connection: a session survives its socket moving between replicas, a replica
restart and a Redis outage; workers' capacity is respected.
"""

from __future__ import annotations

import asyncio
import os
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
from cluster_harness import ClusterHarness, key_event
from control.config import ConfigError
from control_harness import RawClient
from redis_server import RedisServer
from roomscribe.client.audio_files import read_wav
from roomscribe.client.control_client import ControlClient
from roomscribe.client.events import ClientNotice, Event
from roomscribe.client.sources import numpy_stream
from roomscribe.client.stream import send_stream
from speech_samples import JFK, JFK_TEXT, LIBRI, LIBRI_TEXT, ROOT, pcm_frames, silence, wer

pytestmark = pytest.mark.timeout(180)


class Cluster(ClusterHarness):
    """Control replicas and workers (ws sessions) on one Redis."""


@pytest.fixture
async def cluster(redis_server: RedisServer, key_prefix: str, engine: AsrEngine) -> AsyncIterator[Cluster]:
    async with aiohttp.ClientSession() as http:
        c = Cluster(redis_server.url, key_prefix, engine, http)
        try:
            yield c
        finally:
            await c.close()


@pytest.fixture
async def own_redis(engine: AsrEngine, key_prefix: str) -> AsyncIterator[tuple[RedisServer, Cluster]]:
    """A cluster on a redis-server of its own, which the test may stop and start."""
    redis = RedisServer()
    redis.start()
    try:
        async with aiohttp.ClientSession() as http:
            c = Cluster(redis.url, key_prefix, engine, http)
            try:
                yield redis, c
            finally:
                await c.close()
    finally:
        redis.close()


async def workers_back(c: Cluster) -> None:
    """Until a worker's heartbeat is in Redis again (nothing announces it: poll what dispatch reads)."""
    async with asyncio.timeout(30):
        while not await c.stores[0].workers():  # noqa: ASYNC110
            await asyncio.sleep(0.2)


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
    async with key_event(cluster.stores[0], "del", f"session:{ready['session_id']}") as deleted:
        await client.send(type="session.stop", id="stop")
        await client.wait_type("session.ended")
        await deleted()  # its state leaves Redis once it ended
    finals = client.of_type("transcript.final")
    assert wer(JFK_TEXT, " ".join(f["text"] for f in finals)) <= 0.10
    seqs = [e["seq"] for e in numbered(client)]
    assert seqs == list(range(1, len(seqs) + 1))
    await client.close()


@pytest.mark.timeout(360)
async def test_keyterms_and_words_travel_to_the_worker(cluster: Cluster) -> None:
    replica = await cluster.replica(finish_timeout_s=240.0)  # words: the full 30-s window, slow when loaded
    await cluster.worker()
    client = await replica.connect("alice")
    await client.send(type="session.start", id="s", transport="ws", keyterms=["Waldo"], words=True)
    ready = await client.wait_type("session.ready", id="s")
    state = await cluster.store().session(ready["session_id"])
    assert state is not None and (state.record.keyterms, state.record.prompt, state.record.words) == (["Waldo"], None, True)
    await stream(client, pcm_frames(speech(ROOT / "examples" / "audio" / "asterisk_waldo.wav")))
    await client.send(type="session.stop", id="stop")
    await client.wait_type("session.ended", timeout=240)
    finals = client.of_type("transcript.final")
    assert "Waldo's" in " ".join(f["text"] for f in finals), finals
    assert all(f["words"] for f in finals)
    await client.send(type="session.start", id="bad", transport="ws", keyterms=["x" * 51])
    assert (await client.wait_type("error", id="bad"))["code"] == "prompt.too_long"
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


async def test_a_new_session_on_another_replica_replaces_the_users_session_there(cluster: Cluster) -> None:
    """One session per user in the cluster, as in one process: the old socket gets the final of its
    open utterance, then `session.ended {reason: "replaced"}`; the new session is the user's."""
    replica_a = await cluster.replica()
    replica_b = await cluster.replica()
    await cluster.worker()
    first = await replica_a.connect("carol")
    await first.send(type="session.start", transport="ws")
    old = await first.wait_type("session.ready")
    await stream(first, pcm_frames(read_wav(JFK).samples))  # no trailing silence: the utterance stays open
    await first.wait_type("speech.start")

    second = await replica_b.connect("carol")
    await second.send(type="session.start", id="new", transport="ws")
    new = await second.wait_type("session.ready", id="new")
    ended = await first.wait_type("session.ended")
    assert ended["reason"] == "replaced" and ended["session_id"] == old["session_id"]
    finals = first.of_type("transcript.final")
    assert finals and wer(JFK_TEXT, " ".join(f["text"] for f in finals)) <= 0.10  # finalised, not lost
    assert first.events.index(finals[-1]) < first.events.index(ended)
    store = cluster.stores[0]
    assert await store.user_session("carol") == new["session_id"]
    assert await store.session(old["session_id"]) is None
    await first.close()
    await second.close()


async def test_monitors_on_another_replica_see_the_session_and_strangers_are_refused(cluster: Cluster) -> None:
    replica_a = await cluster.replica()
    replica_b = await cluster.replica()
    await cluster.worker()
    speaker = await replica_a.connect("hana")
    monitor = await replica_b.connect(token=replica_b.token("ops", permissions=("monitor",)))
    stranger = await replica_b.connect("mallory")
    await monitor.send(type="subscribe", id="u", user="hana", events=["transcript.final", "session.ended"])
    by_user = await monitor.wait_type("subscribed", id="u")

    await speaker.send(type="session.start", transport="ws")
    ready = await speaker.wait_type("session.ready")
    await monitor.send(type="subscribe", id="s", session_id=ready["session_id"], events=["speech.start", "session.ended"])
    by_session = await monitor.wait_type("subscribed", id="s")
    await stranger.send(type="subscribe", id="x", session_id=ready["session_id"])
    assert (await stranger.wait_type("error", id="x"))["code"] == "not_allowed"
    await monitor.send(type="subscribe", id="n", session_id="s_nosuchsession")
    assert (await monitor.wait_type("error", id="n"))["code"] == "session.not_found"

    await stream(speaker, pcm_frames(speech(JFK)))
    await speaker.send(type="session.stop")
    await speaker.wait_type("session.ended")
    ended = await monitor.wait_for(
        lambda e: e["type"] == "session.ended" and e.get("subscription_id") == by_user["subscription_id"]
    )
    assert ended["session_id"] == ready["session_id"] and ended["user"] == "hana" and ended["reason"] == "stopped"
    finals = [e for e in monitor.of_type("transcript.final") if e["subscription_id"] == by_user["subscription_id"]]
    assert [f["text"] for f in finals] == [f["text"] for f in speaker.of_type("transcript.final")]  # each once, in order
    assert [e["seq"] for e in finals] == [f["seq"] for f in speaker.of_type("transcript.final")]
    await monitor.wait_for(lambda e: e["type"] == "session.ended" and e.get("subscription_id") == by_session["subscription_id"])
    watched = [
        e["type"]
        for e in monitor.events
        if e.get("subscription_id") == by_session["subscription_id"] and e["type"] != "subscribed"
    ]
    assert watched[0] == "speech.start" and watched[-1] == "session.ended"
    # A subscription to one session ends with it; the one to the user goes on.
    await monitor.send(type="unsubscribe", id="gone", subscription_id=by_session["subscription_id"])
    assert (await monitor.wait_type("error", id="gone"))["code"] == "subscription.not_found"
    await monitor.send(type="unsubscribe", id="kept", subscription_id=by_user["subscription_id"])
    await monitor.wait_type("unsubscribed", id="kept")
    assert not [e for e in stranger.events if e["type"].startswith("transcript")]
    for client in (speaker, monitor, stranger):
        await client.close()


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


async def test_redis_down_gives_coded_errors_and_the_cluster_recovers(own_redis: tuple[RedisServer, Cluster]) -> None:
    redis, c = own_redis
    replica = await c.replica()
    await c.worker()
    client = await replica.connect("dave")
    await redis.astop()
    health = await c.http.get(replica.server.http_url + "/healthz")
    assert health.status == 503 and (await health.json())["redis"].startswith("unavailable")
    await client.send(type="session.start", id="s", transport="ws")
    error = await client.wait_type("error", id="s")
    assert error["code"] == "cluster.unavailable" and error["retry_after"] > 0
    await redis.astart()
    async with asyncio.timeout(30):
        # Nothing announces Redis's return to a test: poll what a load balancer would.
        while (await c.http.get(replica.server.http_url + "/healthz")).status != 200:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    await workers_back(c)
    await client.send(type="session.start", id="s2", transport="ws")
    await client.wait_type("session.ready", id="s2")
    await stream(client, pcm_frames(speech(JFK)))
    await client.send(type="session.stop")
    await client.wait_type("session.ended")
    assert wer(JFK_TEXT, " ".join(f["text"] for f in client.of_type("transcript.final"))) <= 0.10
    await client.close()


async def test_a_redis_that_restarts_empty_ends_the_session_as_lost_and_a_new_one_works(
    own_redis: tuple[RedisServer, Cluster],
) -> None:
    """Redis restarted without its data (no persistence): the session cannot go on, and its client
    is told so with `session.ended {reason: "lost"}` instead of waiting in silence."""
    redis, c = own_redis
    replica = await c.replica(grace_period_s=6.0)  # its keeper looks every 2 s
    await c.worker()
    client = await replica.connect("erin")
    await client.send(type="session.start", id="s", transport="ws")
    ready = await client.wait_type("session.ready", id="s")
    await stream(client, pcm_frames(speech(JFK)))
    await client.wait_type("transcript.final")
    await redis.astop()
    await redis.astart()  # empty: the test server keeps nothing on disk
    ended = await client.wait_type("session.ended", timeout=60)
    assert ended["reason"] == "lost" and ended["session_id"] == ready["session_id"]
    await workers_back(c)  # until then a start gets server.busy (no worker known)
    await client.send(type="session.start", id="s2", transport="ws")
    await client.wait_type("session.ready", id="s2", timeout=60)
    await client.close()


async def test_the_client_library_starts_a_new_session_when_redis_lost_its_own(
    own_redis: tuple[RedisServer, Cluster],
) -> None:
    """`ControlClient` (restart_lost_session, the default) carries on in a new session after
    `session.ended {reason: "lost"}`, and what it sends next is transcribed."""
    redis, c = own_redis
    replica = await c.replica(grace_period_s=6.0)
    await c.worker()
    client = ControlClient(replica.server.url, replica.token("gus"))
    restarted = asyncio.get_running_loop().create_future()

    def on_notice(event: Event) -> None:
        if isinstance(event, ClientNotice) and event.code == "session.restarted" and not restarted.done():
            restarted.set_result(event)

    client.on(on_notice)
    await client.connect()
    first = await client.start_session(transport="ws")
    await redis.astop()
    await redis.astart()  # empty
    notice = await asyncio.wait_for(restarted, 60)
    assert notice.raw["lost_session_id"] == first.session_id and client.session_id != first.session_id
    finals: list[Event] = []
    client.on(finals.append, ("transcript.final",))
    await send_stream(client, numpy_stream(speech(JFK), 16000, speed=0))
    await client.stop_session(timeout_s=60)
    await client.close()
    assert wer(JFK_TEXT, " ".join(f.raw["text"] for f in finals)) <= 0.10


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
                store = c.stores[0]
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


async def test_a_cluster_does_not_record_and_says_so(cluster: Cluster) -> None:
    """Recording is `roomscribe serve`'s: a replica refuses `record: true` (coded), and will not
    start with ROOMSCRIBE_RECORD (it would silently record nothing)."""
    replica = await cluster.replica()
    client = await replica.connect("rex", token=replica.token("rex", permissions=("record",)))
    await client.send(type="session.start", id="s", transport="ws", record=True)
    error = await client.wait_type("error", id="s")
    assert error["code"] == "recording.unavailable"
    assert replica.server.manager is not None and not replica.server.manager.sessions
    for path in ("/v1/sessions/s_x/recording", "/v1/sessions/s_x/transcript"):  # no download routes
        async with cluster.http.get(replica.server.http_url + path) as response:
            assert response.status == 404
    await client.close()
    with pytest.raises(ConfigError, match="ROOMSCRIBE_RECORD"):
        await cluster.replica(record=True)


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
async def test_a_command_comes_from_the_worker_and_a_resume_elsewhere_replays_it_once(cluster: Cluster) -> None:
    """Commands are matched on the worker (each its own output-stream entry, journaled like any
    event): the control replica numbers it right after its final, and another replica replays it."""
    replica_a = await cluster.replica()
    replica_b = await cluster.replica()
    await cluster.worker()
    first = await replica_a.connect("erin")
    commands = [{"name": "fellow", "phrases": ["my fellow americans"]}]
    await first.send(type="session.start", id="s", transport="ws", commands=commands)
    ready = await first.wait_type("session.ready", id="s")
    await stream(first, pcm_frames(speech(JFK)))
    command = await first.wait_type("command", name="fellow")
    final = next(e for e in numbered(first) if e["seq"] == command["seq"] - 1)
    assert final["type"] == "transcript.final" and final["utterance_id"] == command["utterance_id"]
    assert command["text"] == final["text"] and command["phrase"] == "my fellow americans"

    second = await replica_b.connect("erin")
    await second.send(type="session.start", id="r", resume={"session_id": ready["session_id"], "last_seq": 0})
    await second.wait_type("session.ready", id="r")
    await second.send(type="session.stop", id="stop")
    await second.wait_type("session.ended")
    replayed = [e for e in numbered(second) if e["type"] == "command"]
    assert [e["seq"] for e in replayed] == [command["seq"]]
    await first.close()
    await second.close()
