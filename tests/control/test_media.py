"""A session's media (control/media.py) without sockets: the ws transport's frame handling and resume
bookkeeping, LiveKit's refusal of socket audio, and how the session manager uses the interface."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from agent.events import PipelineEvent, SpeechStarted
from control.config import Settings
from control.livekit_media import LiveKitTransport
from control.media import ReadyMedia, SessionMedia
from control.schema import AudioFormat, ProtocolError, ReadyAudio, ServerMessage
from control.session import Session, SessionManager, SessionOptions
from control.ws_media import WsSessionMedia, WsTransport
from tokens import IssuedToken


class FakeSocket:
    """The AudioSocket a frame came from: keeps what goes back to the client."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.errors: list[str] = []

    def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)

    def send_error(self, error: ProtocolError) -> None:
        self.errors.append(error.code)

    def send_message(self, message: ServerMessage, *, droppable: bool = False, force: bool = False) -> None:
        pass


class FeedRecorder:
    """A stand-in pipeline that keeps what it is fed."""

    def __init__(self, on_event: Any, participant: str | None, options: Any = None) -> None:
        self.on_event = on_event
        self.fed: list[tuple[np.ndarray, int, int]] = []

    def feed(self, samples: np.ndarray, sample_rate: int, channels: int = 1) -> None:
        self.fed.append((samples, sample_rate, channels))

    def queued_final_audio_s(self) -> float:
        return 0.0

    async def finish(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


def manager(**transports: Any) -> SessionManager:
    return SessionManager(
        pipeline_factory=FeedRecorder,
        grace_period_s=5.0,
        transports=transports or None,
    )


def fed(session: Session) -> list[tuple[np.ndarray, int, int]]:
    pipeline = session.pipeline()
    assert isinstance(pipeline, FeedRecorder)
    return pipeline.fed


async def ws_session(audio: AudioFormat | None = None, echo: bool = False) -> tuple[Session, WsSessionMedia, FakeSocket]:
    socket = FakeSocket()
    options = SessionOptions(transport="ws", audio=audio, interim=True, echo=echo)
    session = await manager().start("alice", options, socket)
    assert isinstance(session.media, WsSessionMedia)
    return session, session.media, socket


async def test_ws_open_announces_the_format_and_the_bytes_read() -> None:
    _, media, _ = await ws_session(AudioFormat(sample_rate=48000, channels=2))
    assert await media.open() == ReadyMedia(
        audio=ReadyAudio(encoding="pcm_s16le", sample_rate=48000, channels=2), audio_bytes_received=0
    )


async def test_ws_frames_are_counted_echoed_and_fed_as_whole_samples() -> None:
    session, media, socket = await ws_session(echo=True)
    await media.open()
    media.accept_audio(b"\x01\x00\x02\x00\x03", socket)  # two samples and half of a third
    assert socket.errors == ["audio.odd_length"]
    assert socket.sent == [b"\x01\x00\x02\x00\x03"]
    media.accept_audio(b"\x00", socket)  # the third sample completed
    assert [list(samples) for samples, _, _ in fed(session)] == [[1, 2], [3]]
    assert all(rate == 16000 and channels == 1 for _, rate, channels in fed(session))
    # A resuming client resends only what comes after the bytes already read.
    assert (await media.resume()).audio_bytes_received == 6


async def test_ws_refuses_an_oversized_frame_and_has_no_credentials() -> None:
    session, media, socket = await ws_session()
    media.accept_audio(bytes(2 * 16000 + 2), socket)  # over 1 s
    assert socket.errors == ["audio.frame_too_large"] and fed(session) == []
    with pytest.raises(ProtocolError) as info:
        await media.refresh_credentials()
    assert info.value.code == "bad_request"


async def test_livekit_media_refuses_audio_on_the_socket() -> None:
    livekit = LiveKitTransport(Settings(), "ws://127.0.0.1:7880")
    mgr = manager(ws=WsTransport(), livekit=livekit)
    options = SessionOptions(transport="livekit", audio=None, interim=True, echo=False)
    socket = FakeSocket()
    session = await mgr.start("alice", options, socket)
    socket.errors.clear()
    session.media.accept_audio(b"\x00\x00", socket)
    assert socket.errors == ["audio.wrong_transport"]
    assert livekit.multi_user and not livekit.takes_audio_format


async def test_the_manager_refuses_a_transport_it_does_not_offer() -> None:
    with pytest.raises(ProtocolError) as info:
        manager().transport("livekit")
    assert info.value.code == "transport.unavailable"


class RecordingMedia(SessionMedia):
    """Records what the session asks of its media; `open` fails when told to."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.observed: list[PipelineEvent] = []
        self.closed = False

    async def open(self) -> ReadyMedia:
        if self.fail:
            raise ProtocolError("livekit.unavailable", "could not join")
        return ReadyMedia()

    async def resume(self) -> ReadyMedia:
        return ReadyMedia()

    async def ready(self) -> None:
        pass

    async def on_client_vad(self, speaking: bool) -> None:
        pass

    def observe(self, event: PipelineEvent) -> None:
        self.observed.append(event)

    async def refresh_credentials(self) -> IssuedToken:
        raise AssertionError("not asked")

    def accept_audio(self, data: bytes, socket: Any) -> None:
        pass

    async def close(self) -> None:
        self.closed = True


class RecordingTransport:
    takes_audio_format = False
    multi_user = False

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def session_media(self, session: Session) -> RecordingMedia:
        return RecordingMedia(self.fail)


async def test_pipeline_events_are_observed_and_ending_closes_the_media() -> None:
    mgr = manager(ws=RecordingTransport())
    session = await mgr.start("alice", SessionOptions(transport="ws", audio=None, interim=True, echo=False), FakeSocket())
    media = session.media
    assert isinstance(media, RecordingMedia)
    event = SpeechStarted("u1", 0.5)
    session.on_pipeline_event(event)
    assert media.observed == [event]
    await mgr.stop(session)
    assert media.closed


async def test_a_media_that_cannot_open_ends_its_session() -> None:
    mgr = manager(ws=RecordingTransport(fail=True))
    session = await mgr.start("alice", SessionOptions(transport="ws", audio=None, interim=True, echo=False), FakeSocket())
    with pytest.raises(ProtocolError) as info:
        await mgr.open_media(session)
    assert info.value.code == "livekit.unavailable"
    assert session.ended and session.id not in mgr.sessions
    media = session.media
    assert isinstance(media, RecordingMedia) and media.closed
