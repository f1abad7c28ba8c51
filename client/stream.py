"""Stream a WAV file over the ws transport and hand every server event to a callback."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Callable

import aiohttp

from client.audio_files import read_wav

EventHandler = Callable[[dict[str, Any]], None]


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
) -> list[dict[str, Any]]:
    """Stream `path` at `speed`× real time (0 = as fast as possible), then stop the session.

    Returns every event received; `on_event` sees each as it arrives. Raises RuntimeError on an
    `error` that ends the attempt (session.start refused).
    """
    audio = read_wav(path)
    events: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url, headers=headers, heartbeat=10.0) as ws:
            ready = asyncio.get_running_loop().create_future()
            ended = asyncio.get_running_loop().create_future()

            async def reader() -> None:
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue
                    event = json.loads(msg.data)
                    events.append(event)
                    on_event(event)
                    if event["type"] == "session.ready" and not ready.done():
                        ready.set_result(event)
                    elif event["type"] == "error" and event.get("id") == "start" and not ready.done():
                        ready.set_exception(RuntimeError(f"{event['code']}: {event['message']}"))
                    elif event["type"] == "session.ended" and not ended.done():
                        ended.set_result(event)
                if not ended.done():
                    ended.set_exception(RuntimeError("the server closed the control socket"))

            read_task = asyncio.create_task(reader())
            try:
                await ws.send_json(
                    {
                        "type": "session.start",
                        "id": "start",
                        "transport": "ws",
                        "interim": interim,
                        "audio": {"encoding": "pcm_s16le", "sample_rate": audio.sample_rate, "channels": audio.channels},
                    }
                )
                await asyncio.wait_for(ready, timeout_s)
                started = time.monotonic()
                sent_s = 0.0
                chunks = list(audio.frames(frame_ms))
                silence = bytes(len(chunks[0])) if chunks else b""
                chunks += [silence] * int(tail_silence_s * 1000 / frame_ms)
                for chunk in chunks:
                    await ws.send_bytes(chunk)
                    sent_s += frame_ms / 1000
                    if speed > 0:
                        delay = started + sent_s / speed - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    else:
                        await asyncio.sleep(0)
                await ws.send_json({"type": "session.stop", "id": "stop"})
                await asyncio.wait_for(ended, timeout_s)
            finally:
                read_task.cancel()
    return events


def format_event(event: dict[str, Any]) -> str | None:
    """A one-line human rendering of a transcript event, or None for events not worth printing."""
    kind = event.get("type")
    who = f"[{event['participant']}] " if event.get("participant") else ""
    if kind == "transcript.interim":
        return f"  … {who}{event['text']}"
    if kind == "transcript.final":
        return f"[{event['start']:6.2f}–{event['end']:6.2f}] {who}{event['text']}"
    if kind == "error":
        return f"error {event['code']}: {event['message']}"
    if kind == "session.ended":
        return f"session ended ({event.get('reason')})"
    return None
