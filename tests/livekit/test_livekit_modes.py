"""LiveKit path behaviours: VAD publish gating, single- vs multi-user rooms, resume, dev-server restart."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from control_harness import ServerHandle, start_livekit_control
from livekit_publisher import publish_wav_subprocess
from speech_samples import JFK, JFK_TEXT, LIBRI, LIBRI_TEXT, normalise, wer
from tokens import mint_client_token

pytestmark = pytest.mark.timeout(150)


async def test_vad_gating_follows_vad_messages_and_hangover(engine) -> None:
    server = await start_livekit_control(engine, publish_gating="vad", publish_hangover_s=0.5)
    try:
        async with aiohttp.ClientSession() as http:
            client = await ServerHandle(server, http).connect("gina")
            await client.send(type="session.start")
            ready = await client.wait_type("session.ready")
            assert ready["livekit"]["publish_gating"] == "vad"
            url, token = ready["livekit"]["url"], ready["livekit"]["token"]
            # Published before the server said so: the agent is not listening, nothing is transcribed.
            await publish_wav_subprocess(url, token, LIBRI)
            await asyncio.sleep(1.0)
            assert not client.of_type("publish.start")
            assert not client.of_type("speech.start") and not client.of_type("transcript.final")

            await client.send(type="vad", speaking=True)
            await client.wait_type("publish.start")
            await publish_wav_subprocess(url, token, JFK, tail_silence_s=0.2, linger_s=3.0, speak_after=client.heard("gina"))
            await client.send(type="vad", speaking=False)
            stop = await client.wait_type("publish.stop", timeout=30)
            assert stop["reason"] == "vad"
            finals = client.of_type("transcript.final")
            assert finals and all(f["seq"] < stop["seq"] for f in finals), "the utterance is finalised before publish.stop"
            text = " ".join(f["text"] for f in finals)
            assert wer(JFK_TEXT, text) <= 0.10, text
            assert "wizard" not in normalise(text)
            await client.close()
    finally:
        await server.stop()


async def test_inactivity_stops_publishing(engine) -> None:
    server = await start_livekit_control(engine, publish_gating="vad", publish_inactivity_s=1.0)
    try:
        async with aiohttp.ClientSession() as http:
            client = await ServerHandle(server, http).connect("hank")
            await client.send(type="session.start")
            await client.wait_type("session.ready")
            await client.send(type="vad", speaking=True)
            await client.wait_type("publish.start")
            stop = await client.wait_type("publish.stop", timeout=10)
            assert stop["reason"] == "inactivity"
            await client.close()
    finally:
        await server.stop()


async def test_single_user_mode_ignores_other_publishers(lk_control) -> None:
    client = await lk_control.connect("ivan")
    await client.send(type="session.start")
    ready = await client.wait_type("session.ready")
    settings = lk_control.server.settings
    intruder_token = mint_client_token(
        settings.livekit_api_key, settings.livekit_api_secret, identity="intruder", room=ready["room"]
    ).token
    await asyncio.gather(
        publish_wav_subprocess(ready["livekit"]["url"], intruder_token, LIBRI),
        publish_wav_subprocess(ready["livekit"]["url"], ready["livekit"]["token"], JFK, speak_after=client.heard("ivan")),
    )
    await client.send(type="session.stop")
    await client.wait_type("session.ended", timeout=30)
    text = " ".join(f["text"] for f in client.of_type("transcript.final"))
    assert wer(JFK_TEXT, text) <= 0.10, text
    assert "wizard" not in normalise(text)
    await client.close()


async def test_multi_user_mode_transcribes_every_publisher_tagged(lk_control) -> None:
    settings = lk_control.server.settings
    refused = await lk_control.connect("plain")
    await refused.send(type="session.start", id=1, room="team")
    assert (await refused.wait_type("error", id=1))["code"] == "not_allowed"

    # A plain multi_user token (no `rooms` claim, as deployed) names any room of the app, as ever.
    client = await lk_control.connect(token=lk_control.token("lead", permissions=("multi_user",)))
    await client.send(type="session.start", room="team")
    ready = await client.wait_type("session.ready")
    assert ready["room"] == "team"
    url = ready["livekit"]["url"]
    tokens = {
        who: mint_client_token(settings.livekit_api_key, settings.livekit_api_secret, identity=who, room=ready["room"]).token
        for who in ("p1", "p2")
    }
    await asyncio.gather(
        publish_wav_subprocess(url, tokens["p1"], LIBRI, speak_after=client.heard("p1")),
        publish_wav_subprocess(url, tokens["p2"], JFK, speak_after=client.heard("p2")),
    )
    await client.send(type="session.stop")
    await client.wait_type("session.ended", timeout=30)
    by_who: dict[str, str] = {}
    for final in client.of_type("transcript.final"):
        by_who[final["participant"]] = by_who.get(final["participant"], "") + " " + final["text"]
    assert set(by_who) == {"p1", "p2"}
    assert wer(LIBRI_TEXT, by_who["p1"]) <= 0.15 and wer(JFK_TEXT, by_who["p2"]) <= 0.10
    await refused.close()
    await client.close()


async def test_resume_replays_finals_missed_during_a_drop(lk_control) -> None:
    first = await lk_control.connect("judy")
    await first.send(type="session.start")
    ready = await first.wait_type("session.ready")
    await first.wait_type("publish.start")
    last_seq = max(e["seq"] for e in first.events if "seq" in e)
    await first.close()  # the control socket drops; the agent keeps transcribing
    await publish_wav_subprocess(ready["livekit"]["url"], ready["livekit"]["token"], LIBRI)
    await asyncio.sleep(1.0)
    second = await lk_control.connect("judy")
    await second.send(type="session.start", resume={"session_id": ready["session_id"], "last_seq": last_seq})
    resumed = await second.wait_type("session.ready")
    assert resumed["resumed"] and resumed["livekit"]["token"] != ready["livekit"]["token"]
    final = await second.wait_type("transcript.final", timeout=20)
    assert wer(LIBRI_TEXT, final["text"]) <= 0.15
    assert len(second.of_type("transcript.final")) == 1
    await second.close()


async def test_agent_survives_a_dev_server_restart(lk_control) -> None:
    from roomscribe.devserver import DevServer

    server = lk_control.server
    client = await lk_control.connect("kate")
    await client.send(type="session.start")
    ready = await client.wait_type("session.ready")
    old = server.devserver
    port, keys = old.port, dict(old.keys)
    await old.stop()
    degraded = await client.wait_for(lambda e: e.get("code") == "livekit.degraded", timeout=30)
    server.devserver = DevServer(host="127.0.0.1", port=port, keys=keys, own_process=True)
    await server.devserver.start()
    recovered = await client.wait_for(lambda e: e.get("code") == "livekit.recovered", timeout=40)
    assert recovered["seq"] > degraded["seq"]
    await client.send(type="token.refresh", id="t")
    token = await client.wait_type("token", id="t")
    await publish_wav_subprocess(ready["livekit"]["url"], token["token"], LIBRI, speak_after=client.heard("kate"))
    final = await client.wait_type("transcript.final", timeout=30)
    assert wer(LIBRI_TEXT, final["text"]) <= 0.15
    await client.close()
