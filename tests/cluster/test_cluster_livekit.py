"""LiveKit sessions in a cluster: a control replica mints the client's token, a worker's agent joins
the room and transcribes it; media never pass through the control tier. Real redis-server, real
dev server (its own process, as `roomscribe devserver` would run beside a cluster), real model, a
real publisher (the official SDK in a subprocess) speaking a WAV as a microphone."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest
from livekit import api

from agent.asr import AsrEngine
from agent.worker import TranscriptionWorker
from cluster_harness import ClusterHarness
from control.livekit_media import LiveKitTransport
from control_harness import RawClient
from livekit_publisher import publish_wav_subprocess
from redis_server import RedisServer
from roomscribe.devserver import DevServer
from speech_samples import JFK, JFK_TEXT, normalise, wer

pytestmark = pytest.mark.timeout(180)


class LiveKitCluster(ClusterHarness):
    """A dev server, control replicas and workers whose agents join its rooms, on one Redis."""

    def __init__(self, redis_url: str, prefix: str, engine: AsrEngine, http: aiohttp.ClientSession) -> None:
        super().__init__(redis_url, prefix, engine, http)
        self.api_key = "dev-" + secrets.token_hex(4)
        self.api_secret = secrets.token_urlsafe(32)
        self.devserver = DevServer(host="127.0.0.1", port=0, keys={self.api_key: self.api_secret}, own_process=True)

    def settings(self, **overrides: Any) -> Any:
        return super().settings(
            audio_transport="livekit",
            livekit_url=self.devserver.url,
            livekit_api_key=self.api_key,
            livekit_api_secret=self.api_secret,
            **overrides,
        )

    async def agent_worker(self, **overrides: Any) -> TranscriptionWorker:
        """A worker whose agents join the dev server's rooms (`overrides`: its settings)."""
        settings = self.settings(**overrides)
        return await self.worker(livekit=LiveKitTransport(settings, settings.livekit_url))

    async def rooms(self) -> list[str]:
        async with api.LiveKitAPI(self.devserver.http_url, self.api_key, self.api_secret) as lk:
            return [r.name for r in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms]

    async def close(self) -> None:
        await super().close()
        await asyncio.wait_for(self.devserver.stop(), 30)


@pytest.fixture
async def lk_cluster(redis_server: RedisServer, key_prefix: str, engine: AsrEngine) -> AsyncIterator[LiveKitCluster]:
    async with aiohttp.ClientSession() as http:
        c = LiveKitCluster(redis_server.url, key_prefix, engine, http)
        await c.devserver.start()
        try:
            yield c
        finally:
            await c.close()


async def started(client: RawClient) -> dict[str, Any]:
    await client.send(type="session.start", id="s")
    ready = await client.wait_type("session.ready", id="s")
    assert ready["transport"] == "livekit"
    return ready


async def test_a_livekit_session_is_transcribed_by_the_workers_agent(lk_cluster: LiveKitCluster) -> None:
    replica = await lk_cluster.replica()
    await lk_cluster.agent_worker()
    client = await replica.connect("alice")
    ready = await started(client)
    lk = ready["livekit"]
    assert lk["url"] == lk_cluster.devserver.url and lk["identity"] == "alice" and lk["room"] == ready["room"]
    claims = jwt.decode(lk["token"], lk_cluster.api_secret, algorithms=["HS256"], issuer=lk_cluster.api_key)
    assert claims["video"]["canPublishSources"] == ["microphone"] and claims["video"]["room"] == lk["room"]
    await client.wait_type("publish.start")  # gating "always": the worker starts on `ready` from control
    assert ready["room"] in await lk_cluster.rooms()  # the worker's agent is in it

    await publish_wav_subprocess(lk["url"], lk["token"], JFK, speak_after=client.heard("alice"))
    assert [e["participant"] for e in client.of_type("status") if e["code"] == "listening"] == ["alice"]
    await client.send(type="session.stop")
    await client.wait_type("session.ended", timeout=30)
    finals = client.of_type("transcript.final")
    assert wer(JFK_TEXT, " ".join(f["text"] for f in finals)) <= 0.10, finals
    assert normalise(finals[0]["text"]).startswith("and so my fellow americ"), finals[0]
    async with asyncio.timeout(15):  # the worker's agent left and deleted the room
        while ready["room"] in await lk_cluster.rooms():  # noqa: ASYNC110  # the room service announces no deletion
            await asyncio.sleep(0.2)
    await client.close()


async def test_token_refresh_through_the_control_replica(lk_cluster: LiveKitCluster) -> None:
    replica = await lk_cluster.replica()
    await lk_cluster.agent_worker()
    client = await replica.connect("bob")
    ready = await started(client)
    await asyncio.sleep(1.1)  # so the new token's times differ
    await client.send(type="token.refresh", id="r")
    token = await client.wait_type("token", id="r")
    assert token["expires_at"] > ready["livekit"]["expires_at"] and token["token"] != ready["livekit"]["token"]
    claims = jwt.decode(token["token"], lk_cluster.api_secret, algorithms=["HS256"], issuer=lk_cluster.api_key)
    assert claims["sub"] == "bob" and claims["video"]["room"] == ready["room"]
    await client.close()


async def test_client_vad_is_forwarded_to_the_worker(lk_cluster: LiveKitCluster) -> None:
    replica = await lk_cluster.replica(publish_gating="vad")
    await lk_cluster.agent_worker(publish_gating="vad", publish_hangover_s=0.2)
    client = await replica.connect("vera")
    ready = await started(client)
    assert ready["livekit"]["publish_gating"] == "vad"
    await client.send(type="vad", speaking=True)
    start = await client.wait_type("publish.start")
    assert start["reason"] == "vad"
    await client.send(type="vad", speaking=False)
    stop = await client.wait_type("publish.stop")
    assert stop["reason"] == "vad" and stop["seq"] > start["seq"]
    await client.close()


async def test_a_killed_workers_livekit_session_moves_and_the_gap_is_reported(lk_cluster: LiveKitCluster) -> None:
    replica = await lk_cluster.replica()
    first = await lk_cluster.agent_worker()
    client = await replica.connect("dana")
    lk = (await started(client))["livekit"]
    await lk_cluster.agent_worker()  # the one it moves to
    speaking = asyncio.ensure_future(
        publish_wav_subprocess(lk["url"], lk["token"], JFK, tail_silence_s=8.0, speak_after=client.heard("dana"))
    )
    before = await client.wait_type("transcript.final", timeout=40)
    await first.abort()  # as kill -9 while dana speaks: no goodbye; its agent's connection drops
    gap = await client.wait_for(lambda e: e.get("code") == "transcription.gap", timeout=30)
    assert before["end"] <= gap["from"] < gap["to"], gap
    # The new worker's agent hears dana's microphone (it stays in the room a while after speaking).
    await client.wait_for(lambda e: e.get("code") == "listening" and e["seq"] > gap["seq"], timeout=30)
    await speaking
    # Transcription goes on: dana publishes again and the new worker hears her from her first words.
    mark = max(e.get("seq") or 0 for e in client.events)
    heard = asyncio.ensure_future(client.wait_for(lambda e: e.get("code") == "listening" and e["seq"] > mark, timeout=30))
    await publish_wav_subprocess(lk["url"], lk["token"], JFK, speak_after=heard)
    await client.send(type="session.stop")
    await client.wait_type("session.ended", timeout=30)
    after = [f for f in client.of_type("transcript.final") if f["seq"] > heard.result()["seq"]]
    assert after and all(f["start"] >= gap["to"] for f in after), after
    # Resumed: the new worker transcribes what dana says now. (Not yet exact: in some runs on a
    # loaded machine its first ~3 s were not transcribed although the agent received them; see
    # the branch's report. The undisturbed path is held to WER <= 10 % above.)
    text = normalise(" ".join(f["text"] for f in after))
    assert "ask what you can do for your country" in text and wer(JFK_TEXT, text) <= 0.35, after
    ids = [f["utterance_id"] for f in client.of_type("transcript.final")]
    assert len(ids) == len(set(ids)), ids  # the new worker numbers on
    await client.close()
