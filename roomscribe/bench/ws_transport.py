"""The ws transport: raw PCM16 frames over the control socket (docs/protocol.md).

The socket is the client library's `Link` and every message a wire-schema struct (see
`roomscribe.bench.transport` for why the bench does not stream through `ControlClient`): each
frame is written the moment the pacing says it has been spoken.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import msgspec

from control.schema import AudioFormat, SessionEnded, SessionReady, SessionStart, SessionStop
from roomscribe.bench.plan import SessionPlan
from roomscribe.bench.transport import (
    Endpoint,
    SessionRecord,
    audio_sender,
    control_link,
    pace_frames,
    read_control_events,
)
from roomscribe.common.audio import SAMPLE_RATE

FRAME_MS = 20


class WsTransport:
    """Streams a session over `session.start {transport: "ws"}` and binary frames."""

    name = "ws"

    def __init__(self, endpoint: Endpoint, *, frame_ms: int = FRAME_MS, drain_timeout_s: float = 120.0) -> None:
        self.endpoint = endpoint
        self.frame_ms = frame_ms
        self.drain_timeout_s = drain_timeout_s

    async def run_session(
        self, plan: SessionPlan, user: str, *, start_delay_s: float = 0.0, interim: bool = True, speed: float = 1.0
    ) -> SessionRecord:
        record = SessionRecord(plan, user, self.name, speed)
        step = SAMPLE_RATE * self.frame_ms // 1000
        data = plan.audio.astype("<i2")
        frames = [data[i : i + step].tobytes() for i in range(0, len(data), step)]
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[SessionReady] = loop.create_future()
        ended: asyncio.Future[SessionEnded] = loop.create_future()
        async with control_link(self.endpoint, user) as link:
            read_task = asyncio.create_task(read_control_events(link, record, ready, ended))
            try:
                audio = msgspec.convert({"sample_rate": SAMPLE_RATE, "channels": 1}, AudioFormat)  # checked
                await link.send_request(SessionStart(id="start", transport="ws", interim=interim, audio=audio))
                await asyncio.wait_for(ready, 30.0)
                record.t0 = time.monotonic() + start_delay_s
                await pace_frames(record, frames, self.frame_ms / 1000, audio_sender(link))
                await link.send_request(SessionStop(id="stop"))
                await asyncio.wait_for(ended, max(self.drain_timeout_s, plan.duration_s))
                record.completed = True
            except (TimeoutError, RuntimeError, aiohttp.ClientError) as exc:  # the client's errors are RuntimeErrors
                record.error = f"{type(exc).__name__}: {exc}"
            finally:
                read_task.cancel()
        return record
