"""A session's media: the one interface both audio transports implement.

A `MediaTransport` is one way audio reaches the server (raw PCM on the control socket, or
LiveKit); it says which `session.start` options apply to it and makes each session's
`SessionMedia`. The socket handler and the session manager talk only to these two interfaces,
so neither has a branch per transport.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from agent.events import PipelineEvent
from control.schema import LiveKitCredentials, ProtocolError, ReadyAudio
from tokens import IssuedToken

if TYPE_CHECKING:
    from control.session import Session, SessionOptions


class SessionPipeline(Protocol):
    """What a session needs of one speaker's transcription pipeline (agent.pipeline.TranscriptionPipeline)."""

    def feed(self, samples: np.ndarray, sample_rate: int, channels: int = 1) -> None:
        """Add one frame of interleaved audio (on the event loop)."""

    def queued_final_audio_s(self) -> float:
        """Seconds of audio in its finals waiting for the model."""

    async def finish(self) -> None:
        """Finalise the open utterance and wait for every final."""

    async def aclose(self) -> None:
        """Stop, cancelling outstanding work."""


#: Makes a speaker's pipeline: (where its events go, the participant it transcribes or None, the
#: session's options: keyterms, prompt, words, language and task).
PipelineFactory = Callable[[Callable[[PipelineEvent], None], str | None, "SessionOptions"], SessionPipeline]


@dataclass(frozen=True)
class ReadyMedia:
    """What `session.ready` announces for the session's transport (the other fields stay unset)."""

    audio: ReadyAudio | None = None
    audio_bytes_received: int | None = None
    livekit: LiveKitCredentials | None = None


class AudioSocket(Protocol):
    """The control socket a binary audio frame arrived on."""

    def send_bytes(self, data: bytes) -> None:
        """Queue a binary frame (droppable) to the client."""

    def send_error(self, error: ProtocolError) -> None:
        """Report a problem with what the client sent."""


class SessionMedia(Protocol):
    """How one session's audio arrives, and the transport's part of the session's lifecycle."""

    async def open(self) -> ReadyMedia:
        """Start receiving audio; return what session.ready announces. ProtocolError if it cannot."""

    async def resume(self) -> ReadyMedia:
        """A socket resumed the session: what its session.ready announces (fresh credentials)."""

    async def ready(self) -> None:
        """session.ready of a new session went out (not after a resume)."""

    async def on_client_vad(self, speaking: bool) -> None:
        """The client's own voice activity (a `vad` request)."""

    def observe(self, event: PipelineEvent) -> None:
        """A pipeline event of this session, before it goes out."""

    async def refresh_credentials(self) -> IssuedToken:
        """A fresh client token (`token.refresh`); ProtocolError where the transport has none."""

    async def pace(self, nbytes: int) -> None:
        """Wait until a binary frame of `nbytes` may be taken (the ws transport meters audio; the
        socket is not read meanwhile). Transports that take no audio on the socket: at once."""
        return None  # a default, not an abstract member: only the ws transport meters

    def accept_audio(self, data: bytes, socket: AudioSocket) -> None:
        """One binary frame from the session's socket; problems go to `socket.send_error`."""

    async def close(self) -> None:
        """Stop receiving audio and release what the transport holds (the session has ended)."""


class MediaTransport(Protocol):
    """One audio transport the server offers: what session.start may ask of it, and each session's media."""

    @property
    def takes_audio_format(self) -> bool:
        """`session.start.audio` applies (the client sends raw PCM in that format)."""

    @property
    def multi_user(self) -> bool:
        """It can transcribe every publisher of a room (`session.start.room`)."""

    def session_media(self, session: Session) -> SessionMedia:
        """The media of a new session (not opened yet)."""
