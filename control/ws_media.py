"""The ws transport: the client sends PCM16 as binary frames on the control socket.

Each session counts the audio bytes it has read, so a resuming client resends only the rest
(`session.ready.audio_bytes_received`). There is nothing to join, publish or refresh.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.events import PipelineEvent
from control.media import AudioSocket, ReadyMedia, SessionMedia
from control.schema import AudioFormat, ProtocolError, ReadyAudio
from control.ws_audio import WsAudioInput
from tokens import IssuedToken

if TYPE_CHECKING:
    from control.session import Session


class WsTransport:
    """MediaTransport for raw PCM on the control socket."""

    takes_audio_format = True
    multi_user = False

    def __init__(self, max_frame_s: float = 1.0) -> None:
        self.max_frame_s = max_frame_s

    def session_media(self, session: Session) -> WsSessionMedia:
        return WsSessionMedia(session, self.max_frame_s)


class WsSessionMedia(SessionMedia):
    """A ws session's audio: frames checked and fed to the session's pipeline, bytes counted."""

    def __init__(self, session: Session, max_frame_s: float) -> None:
        self.session = session
        self.format = session.options.audio or AudioFormat()
        self.max_frame_s = max_frame_s
        #: Audio bytes read so far (what a resuming client need not send again).
        self.bytes_received = 0
        self._input = WsAudioInput(self.format, max_frame_s)

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

    def accept_audio(self, data: bytes, socket: AudioSocket) -> None:
        """Count the frame, echo it if asked, and feed its whole samples to the pipeline."""
        self.bytes_received += len(data)
        if self.session.options.echo:
            socket.send_bytes(data)
        samples, error = self._input.accept(data)
        if error is not None:
            socket.send_error(error)
        if samples is not None:
            self.session.pipeline().feed(samples, self.format.sample_rate, self.format.channels)

    async def close(self) -> None:
        """Nothing held."""
