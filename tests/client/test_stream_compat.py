"""`stream_wav_ws` and `format_event` keep working, now on top of ControlClient."""

from __future__ import annotations

import wave
from pathlib import Path

import pytest

from roomscribe.client.control_client import ControlClient
from roomscribe.client.sources import wav_stream
from roomscribe.client.stream import format_event, send_stream, stream_wav_ws
from speech_samples import JFK, JFK_TEXT, LIBRI, LIBRI_TEXT, wer

pytestmark = pytest.mark.timeout(90)


async def test_stream_wav_ws_returns_the_transcript(control) -> None:
    seen: list[dict] = []
    events = await stream_wav_ws(
        control.server.url, control.token("compat"), JFK, on_event=seen.append, speed=8.0, tail_silence_s=1.0
    )
    finals = [e for e in events if e["type"] == "transcript.final"]
    assert wer(JFK_TEXT, " ".join(f["text"] for f in finals)) <= 0.10, finals
    assert events[-1]["type"] == "session.ended" and events[-1]["reason"] == "stopped"
    assert [e for e in seen if e["type"] != "client.notice"] == events
    seqs = [e["seq"] for e in events if "seq" in e]
    assert seqs == list(range(1, len(seqs) + 1))
    printed = format_event(finals[0])
    assert printed is not None and printed.endswith(finals[0]["text"])


async def test_stream_wav_ws_raises_when_the_session_is_refused(control, tmp_path: Path) -> None:
    odd_rate = tmp_path / "odd.wav"  # 11025 Hz is not a rate the server takes: session.start is refused
    with wave.open(str(odd_rate), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(11025)
        w.writeframes(bytes(2205 * 2))
    with pytest.raises(RuntimeError, match=r"audio.unsupported_format|bad_request"):
        await stream_wav_ws(control.server.url, control.token("bad"), odd_rate, on_event=lambda e: None, speed=0)


def test_format_event_renders_finals_errors_notices_and_forwarded_events() -> None:
    final = {"type": "transcript.final", "text": "hi", "start": 1.0, "end": 2.5, "seq": 3}
    assert format_event(final) == "[  1.00–  2.50] hi"
    assert format_event({**final, "subscription_id": "sub_1", "user": "alice"}) == "[  1.00–  2.50] <alice> hi"
    assert format_event({"type": "error", "code": "x", "message": "y"}) == "error x: y"
    assert format_event({"type": "speech.start", "seq": 1}) is None
    assert "retrying in 0.5 s" in str(format_event({"type": "client.notice", "code": "connection.state", "retry_in_s": 0.5}))


async def test_one_client_runs_sessions_back_to_back(control) -> None:
    client = ControlClient(control.server.url, control.token("gus"))
    finals: list[str] = []
    client.on(lambda e: finals.append(e.raw["text"]), ("transcript.final",))
    await client.connect()
    for _ in range(2):
        await client.start_session(transport="ws")
        await send_stream(client, wav_stream(LIBRI, speed=0, tail_silence_s=1.0))
        await client.stop_session(timeout_s=60)
    await client.close()
    assert len(finals) >= 2
    assert wer(LIBRI_TEXT + " " + LIBRI_TEXT, " ".join(finals)) <= 0.10, finals
