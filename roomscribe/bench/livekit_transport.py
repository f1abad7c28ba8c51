"""The LiveKit transport: the control socket for events, the official `livekit` SDK publishing the
session audio as the microphone (10 ms frames) into the room named in `session.ready`.

Audio published before the agent subscribes is not heard, so before the audio clock (t0) starts the
bench captures silence (paced by the SDK) until the server reports `status {code: "listening"}` (at
most `lead_in_max_s`, at least `lead_in_min_s` so the SDK's sender is running); afterwards frames
paced like a microphone are taken on time (send lateness ≈ 0). The agent's session clock starts
when its subscription does, so server times are shifted against the bench's;
`bench.metrics.timeline_shift` estimates the shift for matching (latency never uses server times).
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import numpy as np

from roomscribe.bench.plan import SessionPlan
from roomscribe.bench.transport import Endpoint, SessionRecord, TransportUnavailable, pace_frames, read_control_events
from roomscribe.common.audio import SAMPLE_RATE

FRAME_MS = 10


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

        record = SessionRecord(plan, user, self.name, speed)
        step = SAMPLE_RATE * FRAME_MS // 1000
        data = plan.audio.astype(np.int16)
        frames = [data[i : i + step] for i in range(0, len(data) - step + 1, step)]
        headers = {"Authorization": f"Bearer {self.endpoint.token_for(user)}"}
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[dict] = loop.create_future()
        ended: asyncio.Future[dict] = loop.create_future()
        listening = asyncio.Event()

        def _on_listening(event: dict) -> None:
            if event.get("type") == "status" and event.get("code") == "listening":
                listening.set()

        room = rtc.Room()
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(self.endpoint.url, headers=headers, max_msg_size=0) as ws:
                read_task = asyncio.create_task(
                    read_control_events(ws, record, ready, ended, unavailable=TransportUnavailable, on_event=_on_listening)
                )
                try:
                    await ws.send_json({"type": "session.start", "id": "start", "transport": "livekit", "interim": interim})
                    lk = (await asyncio.wait_for(ready, 30.0))["livekit"]
                    await room.connect(lk["url"], lk["token"], rtc.RoomOptions(auto_subscribe=False))
                    source = rtc.AudioSource(SAMPLE_RATE, 1, queue_size_ms=50)
                    track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
                    await room.local_participant.publish_track(
                        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
                    )

                    async def send(chunk: np.ndarray) -> None:
                        await source.capture_frame(rtc.AudioFrame(chunk.tobytes(), SAMPLE_RATE, 1, len(chunk)))

                    silence = np.zeros(step, np.int16)
                    began = time.monotonic()
                    while time.monotonic() - began < self.lead_in_max_s and (
                        not listening.is_set() or time.monotonic() - began < self.lead_in_min_s
                    ):
                        await send(silence)
                    record.max_shift_s = time.monotonic() - began  # the agent cannot have heard more than this
                    heard = "heard" if listening.is_set() else "NOT reported as heard"
                    record.notes.append(f"lead-in silence {time.monotonic() - began:.2f} s; track {heard}")

                    record.t0 = time.monotonic() + start_delay_s
                    await pace_frames(record, frames, FRAME_MS / 1000, send)
                    await source.wait_for_playout()
                    await ws.send_json({"type": "session.stop", "id": "stop"})
                    await asyncio.wait_for(ended, max(self.drain_timeout_s, plan.duration_s))
                    record.completed = True
                except TransportUnavailable:
                    raise
                except (TimeoutError, RuntimeError, aiohttp.ClientError, ConnectionError) as exc:
                    record.error = f"{type(exc).__name__}: {exc}"
                finally:
                    read_task.cancel()
                    await room.disconnect()
        return record
