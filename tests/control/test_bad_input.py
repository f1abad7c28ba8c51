"""Bad input on a real server: each gets its own error code, nothing crashes, others are unaffected."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import numpy as np
import pytest

from control_harness import serving
from roomscribe.client.audio_files import read_wav
from speech_samples import LIBRI, LIBRI_TEXT, pcm_frames, silence, wer

pytestmark = pytest.mark.timeout(120)


async def test_each_bad_input_gets_its_code_and_a_second_client_is_unaffected(control) -> None:
    good = await control.connect("good")
    bad = await control.connect("bad")
    await good.send(type="session.start")
    await good.wait_type("session.ready")

    async def good_session() -> list[dict]:
        frames = pcm_frames(np.concatenate([read_wav(LIBRI).samples, silence(1.0)]))
        for frame in frames:
            await good.ws.send_bytes(frame)
            await asyncio.sleep(0.005)
        await good.send(type="session.stop")
        await good.wait_type("session.ended")
        return good.of_type("transcript.final")

    async def expect(code: str, send) -> None:
        before = len(bad.of_type("error"))
        await send()
        await bad.wait_for(
            lambda e: e["type"] == "error" and e["code"] == code and bad.events.index(e) >= 0
            and len(bad.of_type("error")) > before
        )

    good_task = asyncio.create_task(good_session())
    await expect("audio.no_session", lambda: bad.ws.send_bytes(b"\x00\x01" * 160))
    await expect("session.none", lambda: bad.send(type="session.stop"))
    await expect("bad_json", lambda: bad.ws.send_str("{nope"))
    await expect("unknown_type", lambda: bad.send(type="warp.drive"))
    await expect("bad_message", lambda: bad.ws.send_str(json.dumps({"no": "type"})))
    await expect("message_too_large", lambda: bad.ws.send_str(json.dumps({"type": "ping", "pad": "x" * 70000})))
    await expect("audio.unsupported_format", lambda: bad.send(type="session.start", audio={"encoding": "opus"}))
    await expect("audio.unsupported_format", lambda: bad.send(type="session.start", audio={"sample_rate": 11025}))
    await bad.send(type="session.start", id="ok")
    await bad.wait_type("session.ready", id="ok")
    await expect("session.already_started", lambda: bad.send(type="session.start"))
    await expect("audio.odd_length", lambda: bad.ws.send_bytes(b"\x00" * 321))
    await expect("audio.frame_too_large", lambda: bad.ws.send_bytes(b"\x00" * 64000))
    await expect("bad_request", lambda: bad.send(type="vad", speaking="maybe"))
    await expect("bad_request", lambda: bad.send(type="token.refresh"))
    # The bad client's session still works after all that.
    await bad.send(type="ping", id="still-there")
    await bad.wait_type("pong", id="still-there")

    finals = await asyncio.wait_for(good_task, 60)
    assert wer(LIBRI_TEXT, " ".join(f["text"] for f in finals)) <= 0.15
    assert not good.of_type("error")
    for client in (good, bad):
        await client.close()


async def test_error_flood_is_rate_limited_and_counted(control) -> None:
    client = await control.connect("flood")
    for _ in range(300):
        await client.ws.send_str("not json")
    await client.send(type="ping", id="after")
    await client.wait_type("pong", id="after")
    errors = client.of_type("error")
    assert 1 <= len(errors) <= 40  # 20 a second at most
    await asyncio.sleep(1.1)
    await client.ws.send_str("still not json")
    later = await client.wait_for(lambda e: e["type"] == "error" and "suppressed" in e)
    assert later["suppressed"] >= 300 - len(errors) - 1
    await client.close()


async def test_oversized_message_closes_with_1009_and_server_lives_on(control) -> None:
    client = await control.connect("huge")
    await client.ws.send_bytes(b"\x00" * (2 * 1024 * 1024))
    await asyncio.wait_for(client.closed.wait(), 10)
    assert client.ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    async with control.http.get(control.server.http_url + "/healthz") as response:
        assert response.status == 200 and (await response.json())["status"] == "ok"
    other = await control.connect("after-huge")
    await other.send(type="ping", id=1)
    await other.wait_type("pong", id=1)
    await other.close()


async def test_slow_reader_is_disconnected_and_resume_recovers_finals(engine) -> None:
    async with serving(engine, send_queue_limit=4) as handle:
        client = await handle.connect("slow")
        await client.send(type="session.start")
        ready = await client.wait_type("session.ready")
        assert handle.server.manager is not None
        session = handle.server.manager.sessions[ready["session_id"]]
        # Flood the session with non-droppable events faster than the socket can take them.
        for i in range(200):
            session.emit({"type": "status", "code": "test", "message": str(i)})
        await asyncio.wait_for(client.closed.wait(), 10)
        assert client.ws.close_code == 4009
        again = await handle.connect("slow")
        await again.send(type="session.start", resume={"session_id": session.id, "last_seq": 0})
        await again.wait_type("session.ready")
        await again.wait_for(lambda e: e.get("message") == "199")
        assert [e["seq"] for e in again.events if e.get("code") == "test"] == list(range(1, 201))
        await again.close()

