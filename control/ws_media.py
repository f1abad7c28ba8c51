"""The ws transport: the client sends PCM16 as binary frames on the control socket.

Each session counts the audio bytes it has read, so a resuming client resends only the rest
(`session.ready.audio_bytes_received`). There is nothing to join, publish or refresh.

Each session's audio is metered (`control.audio_meter`): past its burst allowance, a frame that
comes faster than `rate`× real time waits before it is taken, and so does every frame while the
session's finals queued for the model hold more than `max_backlog_s` of audio. The socket is not
read meanwhile (backpressure); nothing the session has taken is ever dropped.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from agent.events import PipelineEvent
from control.audio_meter import AudioMeter
from control.media import AudioSocket, ReadyMedia, SessionMedia
from control.schema import AudioFormat, ProtocolError, ReadyAudio
from control.ws_audio import WsAudioInput
from tokens import IssuedToken

if TYPE_CHECKING:
    from control.session import Session


#: How often a session held back by its finals backlog checks it again (seconds).
BACKLOG_POLL_S = 0.05


class WsTransport:
    """MediaTransport for raw PCM on the control socket.

    `rate` (× real time, 0: unmetered) and `burst_s` meter each session's audio; `max_backlog_s`
    (0: off) holds a session's audio while its queued finals hold more audio than that.
    """

    takes_audio_format = True
    multi_user = False

    def __init__(self, max_frame_s: float = 1.0, *, rate: float = 0.0, burst_s: float = 0.0, max_backlog_s: float = 0.0) -> None:
        self.max_frame_s = max_frame_s
        self.rate = rate
        self.burst_s = burst_s
        self.max_backlog_s = max_backlog_s

    def session_media(self, session: Session) -> WsSessionMedia:
        meter = AudioMeter(self.rate, self.burst_s, time.monotonic())
        return WsSessionMedia(session, self.max_frame_s, meter, self.max_backlog_s)


class WsSessionMedia(SessionMedia):
    """A ws session's audio: frames metered, checked and fed to the session's pipeline, bytes counted."""

    def __init__(self, session: Session, max_frame_s: float, meter: AudioMeter | None = None, max_backlog_s: float = 0.0) -> None:
        self.session = session
        self.format = session.options.audio or AudioFormat()
        self.max_frame_s = max_frame_s
        #: Audio bytes read so far (what a resuming client need not send again).
        self.bytes_received = 0
        self._input = WsAudioInput(self.format, max_frame_s)
        #: The session's audio meter; it outlives a resume, so a reconnect does not refill it.
        self.meter = meter or AudioMeter(0.0, 0.0, time.monotonic())
        self.max_backlog_s = max_backlog_s
        #: Wall seconds frames waited for the session's finals backlog to shrink, in total.
        self.backlog_held_s = 0.0

    async def open(self) -> ReadyMedia:
        return self._announce()

    async def resume(self) -> ReadyMedia:
        # The new socket starts on a sample boundary: what the old one left of a split sample is dropped.
        self._input = WsAudioInput(self.format, self.max_frame_s)
        return self._announce()

    def _announce(self) -> ReadyMedia:
        fmt = self.format
        return ReadyMedia(
            audio=ReadyAudio(encoding=fmt.encoding, sample_rate=fmt.sample_rate, channels=fmt.channels),
            audio_bytes_received=self.bytes_received,
        )

    async def ready(self) -> None:
        """Nothing to say: the client sends audio once session.ready arrives."""

    async def on_client_vad(self, speaking: bool) -> None:
        """Not used: every frame the client sends is transcribed."""

    def observe(self, event: PipelineEvent) -> None:
        """Nothing to do."""

    async def refresh_credentials(self) -> IssuedToken:
        raise ProtocolError("bad_request", "token.refresh only applies to LiveKit sessions")

    async def pace(self, nbytes: int) -> None:
        """Wait until a frame of `nbytes` may be taken: the meter's delay, then while the session's
        queued finals hold more than `max_backlog_s` of audio. A frame too large to be taken at all
        does not wait (it is refused at once)."""
        if nbytes > self._input.max_frame_bytes:
            return
        delay = self.meter.reserve(nbytes / self.format.bytes_per_second, time.monotonic())
        if delay > 0:
            await asyncio.sleep(delay)
        if self.max_backlog_s <= 0:
            return
        started = time.monotonic()
        # The scheduler is thread-safe, not asyncio: there is no event to wait for, so poll it.
        while not self.session.ended and self.session.pipeline().queued_final_audio_s() > self.max_backlog_s:  # noqa: ASYNC110
            await asyncio.sleep(BACKLOG_POLL_S)
        self.backlog_held_s += time.monotonic() - started

    def accept_audio(self, data: bytes, socket: AudioSocket) -> None:
        """Count the frame, echo it if asked, and feed its whole samples to the pipeline."""
        self.bytes_received += len(data)
        if self.session.options.echo:
            socket.send_bytes(data)
        samples, error = self._input.accept(data)
        if error is not None:
            socket.send_error(error)
        if samples is not None:
            self.session.count_audio(len(samples) / (self.format.sample_rate * self.format.channels))
            self.session.pipeline().feed(samples, self.format.sample_rate, self.format.channels)

    async def close(self) -> None:
        """Nothing held."""
