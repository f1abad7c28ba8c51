"""The LiveKit media path end to end: control socket → token → official SDK publishes real speech →
the agent transcribes it → transcripts on the control socket. Through the embedded dev server."""

from __future__ import annotations

import asyncio

import aiohttp
import jwt
import pytest
from livekit import api

from control_harness import ServerHandle, start_livekit_control
from livekit_publisher import publish_wav_subprocess
from roomscribe.bench.alignment import align, mono_float
from speech_samples import JFK, JFK_TEXT, LIBRI, normalise, wer

pytestmark = pytest.mark.timeout(120)


async def test_jfk_published_as_mic_is_transcribed(lk_control) -> None:
    client = await lk_control.connect("alice")
    await client.send(type="session.start", id="s")
    ready = await client.wait_type("session.ready", id="s")
    assert ready["transport"] == "livekit"
    lk = ready["livekit"]
    assert lk["identity"] == "alice" and lk["room"] == ready["room"]
    await client.wait_type("publish.start")

    settings = lk_control.server.settings
    claims = jwt.decode(lk["token"], settings.livekit_api_secret, algorithms=["HS256"], issuer=settings.livekit_api_key)
    assert claims["exp"] == lk["expires_at"] and claims["exp"] - claims["nbf"] == settings.client_token_ttl_s
    assert claims["video"]["canPublishSources"] == ["microphone"] and claims["video"]["canSubscribe"] is False
    assert claims["video"]["room"] == lk["room"]

    await publish_wav_subprocess(lk["url"], lk["token"], JFK, speak_after=client.heard("alice"))
    listening = client.of_type("status")
    assert [e["participant"] for e in listening if e["code"] == "listening"] == ["alice"]
    await client.send(type="session.stop")
    await client.wait_type("session.ended", timeout=30)
    finals = client.of_type("transcript.final")
    assert wer(JFK_TEXT, " ".join(f["text"] for f in finals)) <= 0.10, finals
    assert client.of_type("transcript.interim")
    await client.close()


async def test_token_refresh_returns_a_fresh_token(lk_control) -> None:
    client = await lk_control.connect("bob")
    await client.send(type="session.start")
    ready = await client.wait_type("session.ready")
    await asyncio.sleep(1.1)  # so the new token's times differ
    await client.send(type="token.refresh", id="r")
    token = await client.wait_type("token", id="r")
    assert token["expires_at"] > ready["livekit"]["expires_at"]
    assert token["token"] != ready["livekit"]["token"]
    await client.close()


async def test_after_grace_period_the_agent_leaves_and_the_room_is_gone(engine) -> None:
    server = await start_livekit_control(engine, grace_period_s=1.0)
    try:
        async with aiohttp.ClientSession() as http:
            client = await ServerHandle(server, http).connect("carol")
            await client.send(type="session.start")
            ready = await client.wait_type("session.ready")
            settings = server.settings
            url = server.livekit_url.replace("ws://", "http://")
            async with api.LiveKitAPI(url, settings.livekit_api_key, settings.livekit_api_secret) as lk:
                listing = await lk.room.list_participants(api.ListParticipantsRequest(room=ready["room"]))
                assert "roomscribe-agent-" + ready["session_id"] in [p.identity for p in listing.participants]
                await client.close()
                await asyncio.sleep(settings.grace_period_s + 2.0)
                rooms = (await lk.room.list_rooms(api.ListRoomsRequest())).rooms
                assert ready["room"] not in [r.name for r in rooms]
            assert server.manager is not None and not server.manager.sessions
    finally:
        await server.stop()


async def test_transcripts_published_into_the_room_when_enabled(engine) -> None:
    from livekit import rtc

    from tokens import mint_client_token

    server = await start_livekit_control(engine, publish_transcripts=True)
    try:
        async with aiohttp.ClientSession() as http:
            client = await ServerHandle(server, http).connect("lena")
            await client.send(type="session.start")
            ready = await client.wait_type("session.ready")
            settings = server.settings
            viewer_token = mint_client_token(
                settings.livekit_api_key, settings.livekit_api_secret, identity="viewer", room=ready["room"]
            ).token
            received: list[tuple[str, dict[str, str], str]] = []
            readers: set[asyncio.Future[None]] = set()  # the event loop keeps only weak references to tasks

            def on_text(reader: rtc.TextStreamReader, sender: str) -> None:
                async def read() -> None:
                    received.append((await reader.read_all(), dict(reader.info.attributes or {}), sender))

                task = asyncio.ensure_future(read())
                readers.add(task)
                task.add_done_callback(readers.discard)

            viewer = rtc.Room()
            viewer.register_text_stream_handler("lk.transcription", on_text)
            await viewer.connect(ready["livekit"]["url"], viewer_token)
            await publish_wav_subprocess(ready["livekit"]["url"], ready["livekit"]["token"], LIBRI)
            final = await client.wait_type("transcript.final", timeout=30)
            for _ in range(50):
                if any(a.get("lk.transcription_final") == "true" for _, a, _ in received):
                    break
                await asyncio.sleep(0.1)
            finals = [(text, attrs, sender) for text, attrs, sender in received if attrs.get("lk.transcription_final") == "true"]
            assert finals and finals[0][0] == final["text"]
            # LiveKit's components tie the text to the user's microphone through the track id.
            assert finals[0][1]["lk.transcribed_track_id"].startswith("TR_")
            assert finals[0][1]["lk.segment_id"].endswith(final["utterance_id"])
            await viewer.disconnect()
            await client.close()
    finally:
        await server.stop()


#: How far the audio may move during the first words after `listening`. Before the fix, NetEq's
#: start-up adaptation moved it 20–50 ms in every run (decelerate, then accelerate); one reaction to
#: a late packet on a loaded 2-core machine (a model decode beside the media threads) moves it once
#: by a pitch period or a 10 ms expand, which Whisper does not mishear. The exact (3 ms) criterion
#: over many runs is the benchmark's: `python -m roomscribe.bench.first_words --runs 20`.
START_UP_DRIFT_MS = 15.0


async def test_agent_receives_the_published_audio_unstretched(engine, tmp_path) -> None:
    """What the pipeline got (the agent's debug tap) matches what the client published after
    `listening`: chunk by chunk over the first 3 s of speech nothing is missing and the timing
    holds (no start-up stretching by WebRTC's jitter buffer), and the first words are exact."""
    server = await start_livekit_control(engine, debug_audio_dir=str(tmp_path))
    try:
        async with aiohttp.ClientSession() as http:
            client = await ServerHandle(server, http).connect("uma")
            await client.send(type="session.start")
            lk = (await client.wait_type("session.ready"))["livekit"]
            await publish_wav_subprocess(lk["url"], lk["token"], JFK, speak_after=client.heard("uma"))
            await client.send(type="session.stop")
            await client.wait_type("session.ended", timeout=30)
            [tap] = tmp_path.glob("*-uma-*.wav")
            result = align(mono_float(JFK), mono_float(tap))
            assert result.intact(max_drift_ms=START_UP_DRIFT_MS), f"stretched or lost: {result}"
            first = client.of_type("transcript.final")[0]["text"]
            # Up to the plural's soft final "s" at the utterance's end: how the model guesses a
            # clipped sound is not what this test is about.
            assert normalise(first).startswith("and so my fellow americ"), first
            await client.close()
    finally:
        await server.stop()
