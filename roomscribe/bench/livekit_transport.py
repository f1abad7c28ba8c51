"""The LiveKit transport: the control socket for events, the official `livekit` SDK publishing the
session audio as the microphone (10 ms frames, through `client.publish_loop.PublishLoop`) into the
room named in `session.ready`.

Audio published before the agent subscribes is not heard, so before the audio clock (t0) starts the
bench captures silence (paced by the SDK) until the server reports `status {code: "listening"}` (at
most `lead_in_max_s`, at least `lead_in_min_s` so the SDK's sender is running); afterwards frames
paced like a microphone are taken on time (send lateness ≈ 0). The agent's session clock starts
when its subscription does, so server times are shifted against the bench's;
`bench.metrics.timeline_shift` estimates the shift for matching (latency never uses server times).

The control socket is the client library's `Link` and every message a wire-schema struct; the bench
does not use `ControlClient` (see `roomscribe.bench.transport`: its heartbeat, reconnect and resume
would hide a dropped socket the bench must report).
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from control.schema import ServerMessage, SessionEnded, SessionReady, SessionStart, SessionStop, Status
from roomscribe.bench.plan import SessionPlan
from roomscribe.bench.transport import (
    Endpoint,
    SessionRecord,
    TransportUnavailable,
    control_link,
    pace_frames,
    read_control_events,
)
from roomscribe.common.audio import SAMPLE_RATE


class LiveKitTransport:
    """Streams a session over `session.start {transport: "livekit"}`."""

    name = "livekit"

    def __init__(
        self, endpoint: Endpoint, *, drain_timeout_s: float = 120.0, lead_in_min_s: float = 0.3, lead_in_max_s: float = 10.0
    ) -> None:
        try:
            from livekit import rtc  # noqa: F401
        except ImportError:
            raise TransportUnavailable("the `livekit` Python SDK is not installed") from None
        self.endpoint = endpoint
        self.drain_timeout_s = drain_timeout_s
        self.lead_in_min_s = lead_in_min_s
        self.lead_in_max_s = lead_in_max_s

    async def run_session(
        self, plan: SessionPlan, user: str, *, start_delay_s: float = 0.0, interim: bool = True, speed: float = 1.0
    ) -> SessionRecord:
        from livekit import rtc

        from roomscribe.client.publish_loop import FRAME_MS, PublishLoop, ten_ms_frames

        record = SessionRecord(plan, user, self.name, speed)
        frames = list(ten_ms_frames(plan.audio, SAMPLE_RATE))
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[SessionReady] = loop.create_future()
        ended: asyncio.Future[SessionEnded] = loop.create_future()
        listening = asyncio.Event()

        def _on_listening(event: ServerMessage) -> None:
            if isinstance(event, Status) and event.code == "listening":
                listening.set()

        room = rtc.Room()
        publish: PublishLoop | None = None
        async with control_link(self.endpoint, user) as link:
            read_task = asyncio.create_task(
                read_control_events(link, record, ready, ended, unavailable=TransportUnavailable, on_event=_on_listening)
            )
            try:
                await link.send_request(SessionStart(id="start", transport="livekit", interim=interim))
                lk = (await asyncio.wait_for(ready, 30.0)).livekit
                if lk is None:
                    raise RuntimeError("session.ready carries no LiveKit credentials")
                await room.connect(lk.url, lk.token, rtc.RoomOptions(auto_subscribe=False))
                publish = PublishLoop(SAMPLE_RATE, 1, queue_size_ms=50)
                await publish.publish_to(room)

                lead_in_s = await publish.lead_in(listening, min_s=self.lead_in_min_s, max_s=self.lead_in_max_s)
                record.max_shift_s = lead_in_s  # the agent cannot have heard more than this
                heard = "heard" if listening.is_set() else "NOT reported as heard"
                record.notes.append(f"lead-in silence {lead_in_s:.2f} s; track {heard}")

                record.t0 = time.monotonic() + start_delay_s
                await pace_frames(record, frames, FRAME_MS / 1000, publish.capture)
                await publish.wait_for_playout()
                await link.send_request(SessionStop(id="stop"))
                await asyncio.wait_for(ended, max(self.drain_timeout_s, plan.duration_s))
                record.completed = True
            except TransportUnavailable:
                raise
            except (TimeoutError, RuntimeError, aiohttp.ClientError, ConnectionError) as exc:
                record.error = f"{type(exc).__name__}: {exc}"
            finally:
                read_task.cancel()
                await room.disconnect()
                if publish is not None:  # the SDK's audio source task ends with the session
                    await publish.aclose()
        return record
