"""The ws transport: raw PCM16 frames over the control socket (docs/protocol.md)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import msgspec

from control.schema import AudioFormat, SessionStart, SessionStop
from roomscribe.bench.plan import SessionPlan
from roomscribe.bench.transport import Endpoint, SessionRecord, pace_frames, read_control_events, send_request
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
        headers = {"Authorization": f"Bearer {self.endpoint.token_for(user)}"}
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[dict] = loop.create_future()
        ended: asyncio.Future[dict] = loop.create_future()
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(self.endpoint.url, headers=headers, max_msg_size=0) as ws:
                read_task = asyncio.create_task(read_control_events(ws, record, ready, ended))
                try:
                    audio = msgspec.convert({"sample_rate": SAMPLE_RATE, "channels": 1}, AudioFormat)  # checked
                    await send_request(ws, SessionStart(id="start", transport="ws", interim=interim, audio=audio))
                    await asyncio.wait_for(ready, 30.0)
                    record.t0 = time.monotonic() + start_delay_s
                    await pace_frames(record, frames, self.frame_ms / 1000, ws.send_bytes)
                    await send_request(ws, SessionStop(id="stop"))
                    await asyncio.wait_for(ended, max(self.drain_timeout_s, plan.duration_s))
                    record.completed = True
                except (TimeoutError, RuntimeError, aiohttp.ClientError) as exc:
                    record.error = f"{type(exc).__name__}: {exc}"
                finally:
                    read_task.cancel()
        return record
