"""Protocol edges on a real server: hostile input, stale sockets, log injection, finals at every end."""

from __future__ import annotations

import asyncio
import logging

import pytest

from control.connection import ControlConnection
from control_harness import RawClient, ServerHandle, serving
from roomscribe.client.audio_files import read_wav
from speech_samples import JFK, pcm_frames

pytestmark = pytest.mark.timeout(180)


async def answer(client: RawClient, text: str) -> dict:
    """Send one raw text frame followed by a ping; the error it caused (the server answers in order)."""
    before = len(client.events)
    marker = f"after-{before}"
    await client.ws.send_str(text)
    await client.send(type="ping", id=marker)
    await client.wait_type("pong", id=marker)
    errors = [e for e in client.events[before:] if e["type"] == "error"]
    assert len(errors) == 1, (text[:80], client.events[before:])
    return errors[0]


HOSTILE = [
    # (frame, expected code, expected echoed id or None)
    ('{"type": "ping", "id": ' + "9" * 5000 + "}", "bad_message", None),  # was: ValueError, socket dropped
    ('{"type": "session.start", "audio": {"sample_rate": ' + "9" * 5000 + "}}", "bad_message", None),
    ('{"type": "session.start", "id": 1, "resume": {"session_id": "s", "last_seq": ' + "9" * 400 + "}}",
     "session.not_found", 1),
    ('{"type": "ping", "id": 1e400}', "bad_message", None),
    ('{"type": "subscribe", "id": "n", "user": "x", "events": [["x"]]}', "bad_request", "n"),  # was: TypeError
    ('{"type": "subscribe", "id": "d", "user": "x", "events": [{"a": {"b": [1]}}]}', "bad_request", "d"),
    ('{"type": "subscribe", "id": "b", "user": "x", "session_id": "s"}', "bad_request", "b"),
    ('{"type": "vad", "id": 3, "speaking": 1}', "bad_request", 3),
    ('{"type": "session.start", "id": "r", "resume": "s_1"}', "bad_request", "r"),
    ('{"type": "session.start", "id": "m", "room": 5}', "bad_request", "m"),
    ('{"type": "session.start", "id": "t", "transport": ["ws"]}', "bad_request", "t"),
    ('{"type": "auth.refresh", "id": "a"}', "bad_request", "a"),
    ('{"type": "auth.refresh", "id": "a2", "token": 5}', "bad_request", "a2"),
    ('{"type": "ping", "x": ' + "[" * 2000 + "]" * 2000 + "}", "bad_json", None),  # nesting past msgspec's limit
    ('{"type": {"nested": ["junk"]}, "id": "j"}', "bad_message", "j"),
    ('{"type": "ping", "id": {"$ne": null}}', "bad_message", None),
    ('{"type": "ping"} {"type": "ping"}', "bad_json", None),
    ('{"type": "ping", "id": "\\ud800"}', "bad_json", None),  # a lone surrogate
    ("", "bad_json", None),
    ("null", "bad_message", None),
    ('"session.stop"', "bad_message", None),
    ('{"type": "\\u0000\\u001b[2J", "id": "c"}', "unknown_type", "c"),
    ('{"type": "session.stop", "id": "x", "type": "ping"}', "bad_request", "x"),  # duplicate keys
]


async def test_hostile_frames_each_get_a_coded_error_and_the_socket_serves_on(
    control: ServerHandle, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setattr("control.connection.ERRORS_PER_SECOND", 1000)  # every error answered, none rate limited
    client = await control.connect("hostile")
    for text, code, request_id in HOSTILE:
        error = await answer(client, text)
        assert (error["code"], error.get("id")) == (code, request_id), (text[:80], error)
    # Unknown fields with nested junk are ignored; a 30-digit id is echoed exactly; NUL and escapes in an id too.
    junk = '{"type": "ping", "id": "j1", "extra": {"deep": [[[{"x": null}]]], "n": ' + "7" * 900 + "}}"
    await client.ws.send_str(junk)
    await client.wait_type("pong", id="j1")
    await client.ws.send_str('{"type": "ping", "id": ' + "1" * 30 + "}")
    await client.wait_type("pong", id=int("1" * 30))
    await client.send(type="ping", id="\x00\x1b[31m\n")
    await client.wait_type("pong", id="\x00\x1b[31m\n")
    # Binary junk in a ws session is audio: what does not end on a sample boundary is said so.
    await client.send(type="session.start", id="s")
    await client.wait_type("session.ready", id="s")
    before = len(client.of_type("error"))
    await client.ws.send_bytes(b"\xff\xfe\x00junk!\x01")  # 9 bytes
    await client.wait_for(lambda e: e.get("code") == "audio.odd_length" and len(client.of_type("error")) > before)
    await client.send(type="session.stop", id="stop")
    await client.wait_type("session.ended")
    assert not client.closed.is_set()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "a hostile frame made the server fail"
    await client.close()


async def test_a_handler_that_fails_answers_internal_error_and_the_socket_serves_on(
    control: ServerHandle, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(self: ControlConnection, message: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(ControlConnection, "_on_subscribe", broken)
    client = await control.connect("unlucky")
    await client.send(type="subscribe", id="sub", user="unlucky")
    error = await client.wait_type("error", id="sub")
    assert error["code"] == "internal_error" and "a bug" not in error["message"]
    await client.send(type="ping", id="p")
    await client.wait_type("pong", id="p")
    assert any(r.exc_info and "a bug" in str(r.exc_info[1]) for r in caplog.records)
    await client.close()


async def test_a_socket_whose_session_was_resumed_elsewhere_cannot_steer_it(control: ServerHandle) -> None:
    old = await control.connect("mover")
    await old.send(type="session.start", id=1)
    ready = await old.wait_type("session.ready", id=1)
    new = await control.connect("mover")
    await new.send(type="session.start", id=1, resume={"session_id": ready["session_id"], "last_seq": 0})
    await new.wait_type("session.ready", id=1)
    await old.wait_type("session.ended", reason="resumed_elsewhere")
    for request in ({"type": "session.stop"}, {"type": "vad", "speaking": True}, {"type": "token.refresh"}):
        await old.send(**request, id=request["type"])
        error = await old.wait_type("error", id=request["type"])
        assert error["code"] == "session.moved", error
    # The session goes on where it was resumed, and only that socket ends it.
    assert control.server.manager is not None and ready["session_id"] in control.server.manager.sessions
    await new.send(type="session.stop", id=2)
    ended = await new.wait_type("session.ended", reason="stopped")
    assert ended["session_id"] == ready["session_id"]
    await old.send(type="ping", id="still")
    await old.wait_type("pong", id="still")
    for client in (old, new):
        await client.close()


async def test_a_user_id_with_newlines_and_escapes_cannot_forge_a_log_line(
    control: ServerHandle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    forged = "mallory\nINFO control.app: control socket opened for user admin\x1b[1A\x1b[2K\r"
    client = await control.connect(forged)
    await client.send(type="session.start", id=1)
    await client.wait_type("session.ready", id=1)
    await client.send(type="session.stop", id=2)
    await client.wait_type("session.ended")
    await client.close()
    async with asyncio.timeout(10):
        while not any("closed for user" in r.getMessage() for r in caplog.records):  # noqa: ASYNC110  # logged after the handler returns
            await asyncio.sleep(0.02)
    ours = [r.getMessage() for r in caplog.records if r.name.startswith(("control", "agent"))]
    mentions = [m for m in ours if "mallory" in m]
    assert len(mentions) >= 3, ours  # opened, session started, closed: the user is logged, escaped
    for message in ours:
        assert not any(ch in message for ch in "\n\r\x1b"), repr(message)
    assert any(repr(forged) in m for m in mentions)


def speech_still_open() -> list[bytes]:
    """JFK's first 7 s: the recording stops mid-sentence, so its last utterance is still open."""
    return pcm_frames(read_wav(JFK).samples[: 16000 * 7])


async def send_all(client: RawClient, frames: list[bytes]) -> None:
    """Stream faster than real time, then ping: once the pong is back the server has fed every frame."""
    for frame in frames:
        await client.ws.send_bytes(frame)
    await client.send(type="ping", id="fed")
    await client.wait_type("pong", id="fed")


def before_ended(events: list[dict], session_id: str) -> list[dict]:
    """The session's finals, checked to come before its session.ended."""
    ended = next(i for i, e in enumerate(events) if e["type"] == "session.ended" and e["session_id"] == session_id)
    finals = [e for e in events if e["type"] == "transcript.final" and e.get("session_id", session_id) == session_id]
    assert finals and all(events.index(f) < ended for f in finals), events
    return finals


async def test_replaced_session_delivers_its_last_final_to_socket_and_watcher_first(engine) -> None:
    async with serving(engine, finish_timeout_s=90.0) as control:  # bounded, but never on a busy test machine
        first = await control.connect("replaced")
        watcher = await control.connect("replaced")
        await first.send(type="session.start", id=1)
        ready = await first.wait_type("session.ready", id=1)
        events = ["transcript.final", "session.ended"]
        await watcher.send(type="subscribe", id="w", session_id=ready["session_id"], events=events)
        await watcher.wait_type("subscribed", id="w")
        await send_all(first, speech_still_open())
        second = await control.connect("replaced")
        await second.send(type="session.start", id=1)
        await second.wait_type("session.ready", id=1, timeout=100)
        await first.wait_type("session.ended", reason="replaced")
        finals = before_ended(first.events, ready["session_id"])
        assert finals[-1]["reason"] == "stop" and "country" in finals[-1]["text"].lower(), finals
        watched = before_ended(watcher.events, ready["session_id"])
        assert [f["text"] for f in watched] == [f["text"] for f in finals]
        for client in (first, watcher, second):
            await client.close()


async def test_grace_expiry_delivers_the_final_in_flight_to_watchers(engine) -> None:
    async with serving(engine, grace_period_s=0.3, finish_timeout_s=90.0) as handle:
        client = await handle.connect("gone")
        watcher = await handle.connect("gone")
        await client.send(type="session.start", id=1)
        ready = await client.wait_type("session.ready", id=1)
        await watcher.send(type="subscribe", id="w", session_id=ready["session_id"])
        await watcher.wait_type("subscribed", id="w")
        await send_all(client, speech_still_open())
        await client.close()  # never resumed: the grace period runs out with the utterance open
        ended = await watcher.wait_type("session.ended", timeout=100)
        assert ended["reason"] == "grace_expired"
        finals = before_ended(watcher.events, ready["session_id"])
        assert finals[-1]["reason"] == "stop" and "country" in finals[-1]["text"].lower(), finals
        await watcher.close()

