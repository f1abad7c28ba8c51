"""Streaming audio through a `ControlClient`, and a one-line rendering of events.

`stream_wav_ws` (used by `roomscribe demo` and `examples/stream_wav.py`) is a thin wrapper:
connect, start a ws session, send the file, stop, return the server's events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from control.schema import tag_of
from roomscribe.client.control_client import ControlClient
from roomscribe.client.events import (
    TYPE_FIELD,
    ClientNotice,
    Command,
    Error,
    Event,
    FinalTranscript,
    InterimTranscript,
    NoticeCode,
    SessionEnded,
    Subscribed,
    Unsubscribed,
)
from roomscribe.client.options import ClientOptions
from roomscribe.client.sources import PcmStream, wav_stream

EventHandler = Callable[[dict[str, Any]], None]


async def send_stream(client: ControlClient, stream: PcmStream) -> None:
    """Send every chunk of `stream` into the client's ws session.

    Live sources never wait (while disconnected the client buffers and, past its limit, drops the
    oldest audio); other sources wait for the link, so a file loses nothing.
    """
    async for chunk in stream.chunks:
        if stream.live:
            client.send_audio(chunk)
        else:
            await client.write_audio(chunk)


async def stream_wav_ws(
    url: str,
    token: str,
    path: str | Path,
    *,
    on_event: EventHandler,
    speed: float = 1.0,
    frame_ms: int = 20,
    interim: bool = True,
    tail_silence_s: float = 0.0,
    timeout_s: float = 60.0,
    options: ClientOptions | None = None,
) -> list[dict[str, Any]]:
    """Stream `path` at `speed`× real time (0 = as fast as possible), then stop the session.

    Returns every server event received (each once, even across reconnects); `on_event` sees each
    as it arrives, and also the client's own notices (reconnecting, resumed…). Raises a
    `client.errors.ClientError` (a RuntimeError) when the session cannot be started.
    """
    stream = wav_stream(path, speed=speed, frame_ms=frame_ms, tail_silence_s=tail_silence_s)
    events: list[dict[str, Any]] = []

    def record(event: Event) -> None:
        if not isinstance(event, ClientNotice):
            events.append(event.raw)
        on_event(event.raw)

    client = ControlClient(url, token, options=options)
    client.on(record)
    try:
        await asyncio.wait_for(client.connect(), timeout_s)
        await asyncio.wait_for(
            client.start_session(transport="ws", sample_rate=stream.sample_rate, channels=stream.channels, interim=interim),
            timeout_s,
        )
        await send_stream(client, stream)
        await client.stop_session(timeout_s=timeout_s)
    finally:
        await client.close()
    return events


#: Client notices worth a line of their own.
_PRINTED_NOTICES = frozenset({
    NoticeCode.CONNECTION_DEAD, NoticeCode.SESSION_RESUMED, NoticeCode.SESSION_RESTARTED, NoticeCode.SESSION_LOST,
    NoticeCode.AUDIO_DROPPED, NoticeCode.CONNECTION_FAILED,
})  # fmt: skip


def _format_word(word: dict[str, Any]) -> str:
    confidence = word.get("confidence", word.get("probability"))
    return f"{word['word']} {word['start']:.2f}–{word['end']:.2f} ({confidence:.2f})"


def format_event(event: dict[str, Any]) -> str | None:
    """A one-line human rendering of a transcript event, or None for events not worth printing."""
    kind = event.get(TYPE_FIELD)
    who = f"[{event['participant']}] " if event.get("participant") else ""
    if event.get("subscription_id") and kind not in (tag_of(Subscribed), tag_of(Unsubscribed)):
        who = f"<{event.get('user')}> {who}"
    if kind == tag_of(InterimTranscript):
        return f"  … {who}{event['text']}"
    if kind == tag_of(FinalTranscript):
        language = f" {event['language']}" if event.get("language") else ""  # detected (`language: "auto"`)
        line = f"[{event['start']:6.2f}–{event['end']:6.2f}{language}] {who}{event['text']}"
        if event.get("words"):  # `words: true`: one indented line, `word start–end confidence`
            line += "\n    " + "  ".join(_format_word(w) for w in event["words"])
        return line
    if kind == tag_of(Command):
        return f"[{event['start']:6.2f}–{event['end']:6.2f}] {who}command {event['name']} ({event['phrase']!r})"
    if kind == tag_of(Error):
        return f"error {event['code']}: {event['message']}"
    if kind == tag_of(SessionEnded):
        return f"{who}session ended ({event.get('reason')})"
    if kind == tag_of(ClientNotice):
        code = event.get("code")
        if code in _PRINTED_NOTICES:
            return f"({code}: {event.get('message')})"
        if code == NoticeCode.CONNECTION_STATE and event.get("retry_in_s") is not None:
            return f"(disconnected; retrying in {event['retry_in_s']:.1f} s)"
    return None
