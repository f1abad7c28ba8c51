"""The control-socket protocol: parsing client messages and building server messages.

Pure functions and dataclasses, no I/O. Every message is a JSON object with a `type`;
a request may carry `id` (string or integer), echoed in its reply. See docs/protocol.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agent.events import (
    FinalTranscript,
    InterimTranscript,
    PipelineEvent,
    PipelineNotice,
    SpeechEnded,
    SpeechStarted,
)

PROTOCOL_VERSION = 1
MAX_TEXT_MESSAGE_BYTES = 64 * 1024
CLIENT_MESSAGE_TYPES = (
    "session.start",
    "session.stop",
    "vad",
    "token.refresh",
    "ping",
    "subscribe",
    "unsubscribe",
)
TRANSPORTS = ("livekit", "ws")
ENCODING = "pcm_s16le"
SUPPORTED_SAMPLE_RATES = (8000, 16000, 24000, 32000, 44100, 48000)
SUPPORTED_CHANNELS = (1, 2)


class ProtocolError(Exception):
    """A client message the server cannot act on; becomes an `error` message."""

    def __init__(self, code: str, message: str, request_id: str | int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True)
class ClientMessage:
    type: str
    id: str | int | None
    body: dict[str, Any]


@dataclass(frozen=True)
class AudioFormat:
    """Raw PCM carried in binary WebSocket frames."""

    encoding: str = ENCODING
    sample_rate: int = 16000
    channels: int = 1

    @property
    def bytes_per_frame(self) -> int:
        """Bytes per sample frame (one sample of every channel)."""
        return 2 * self.channels

    @property
    def bytes_per_second(self) -> int:
        return self.bytes_per_frame * self.sample_rate

    def as_dict(self) -> dict[str, Any]:
        return {
            "encoding": self.encoding,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "frame_ms": [20, 40],
        }


@dataclass(frozen=True)
class ResumeRequest:
    session_id: str
    last_seq: int


@dataclass(frozen=True)
class SessionStartRequest:
    transport: str | None = None
    audio: AudioFormat | None = None
    interim: bool = True
    echo: bool = False
    resume: ResumeRequest | None = None
    room: str | None = None  # multi-user sessions name the room to transcribe


def parse_client_message(text: str) -> ClientMessage:
    """Parse one text frame; raise ProtocolError for anything that is not a known request."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_TEXT_MESSAGE_BYTES:
        raise ProtocolError("message_too_large", f"text messages are limited to {MAX_TEXT_MESSAGE_BYTES} bytes")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise ProtocolError("bad_json", "the message is not valid JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError("bad_message", "a message must be a JSON object with a 'type'")
    request_id = data.get("id")
    if request_id is not None and (isinstance(request_id, bool) or not isinstance(request_id, (str, int))):
        raise ProtocolError("bad_message", "'id' must be a string or an integer")
    msg_type = data.get("type")
    if not isinstance(msg_type, str) or not msg_type:
        raise ProtocolError("bad_message", "the message has no 'type'", request_id)
    if msg_type not in CLIENT_MESSAGE_TYPES:
        raise ProtocolError(
            "unknown_type",
            f"unknown message type {msg_type[:64]!r}; known: {', '.join(CLIENT_MESSAGE_TYPES)}",
            request_id,
        )
    body = {k: v for k, v in data.items() if k not in ("type", "id")}
    return ClientMessage(type=msg_type, id=request_id, body=body)


def _bool_field(msg: ClientMessage, name: str, default: bool) -> bool:
    value = msg.body.get(name, default)
    if not isinstance(value, bool):
        raise ProtocolError("bad_request", f"'{name}' must be true or false", msg.id)
    return value


def parse_audio_format(msg: ClientMessage) -> AudioFormat | None:
    """The `audio` object of session.start, checked against what the ws transport accepts."""
    raw = msg.body.get("audio")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ProtocolError("bad_request", "'audio' must be an object {encoding, sample_rate, channels}", msg.id)
    encoding = raw.get("encoding", ENCODING)
    sample_rate = raw.get("sample_rate", 16000)
    channels = raw.get("channels", 1)
    if encoding != ENCODING:
        raise ProtocolError(
            "audio.unsupported_format", f"audio encoding {str(encoding)[:32]!r} is not supported; use {ENCODING!r}", msg.id
        )
    if isinstance(sample_rate, bool) or sample_rate not in SUPPORTED_SAMPLE_RATES:
        raise ProtocolError(
            "audio.unsupported_format",
            f"sample_rate {str(sample_rate)[:16]} is not supported; use one of {list(SUPPORTED_SAMPLE_RATES)} (16000 preferred)",
            msg.id,
        )
    if isinstance(channels, bool) or channels not in SUPPORTED_CHANNELS:
        raise ProtocolError(
            "audio.unsupported_format", f"channels {str(channels)[:16]} is not supported; use 1 (or 2)", msg.id
        )
    return AudioFormat(encoding=ENCODING, sample_rate=int(sample_rate), channels=int(channels))


def parse_session_start(msg: ClientMessage) -> SessionStartRequest:
    """Validate a session.start request."""
    version = msg.body.get("protocol", PROTOCOL_VERSION)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            "protocol.unsupported_version", f"protocol version {version!r} is not supported; this server speaks {PROTOCOL_VERSION}", msg.id
        )
    transport = msg.body.get("transport")
    if transport is not None and transport not in TRANSPORTS:
        raise ProtocolError("bad_request", f"'transport' must be one of {list(TRANSPORTS)}", msg.id)
    resume = None
    raw_resume = msg.body.get("resume")
    if raw_resume is not None:
        if not isinstance(raw_resume, dict):
            raise ProtocolError("bad_request", "'resume' must be an object {session_id, last_seq}", msg.id)
        session_id = raw_resume.get("session_id")
        last_seq = raw_resume.get("last_seq", 0)
        if not isinstance(session_id, str) or not session_id:
            raise ProtocolError("bad_request", "'resume.session_id' must be a non-empty string", msg.id)
        if isinstance(last_seq, bool) or not isinstance(last_seq, int) or last_seq < 0:
            raise ProtocolError("bad_request", "'resume.last_seq' must be a whole number ≥ 0", msg.id)
        resume = ResumeRequest(session_id=session_id, last_seq=last_seq)
    room = msg.body.get("room")
    if room is not None and (not isinstance(room, str) or not room or len(room) > 128):
        raise ProtocolError("bad_request", "'room' must be a non-empty string of at most 128 characters", msg.id)
    return SessionStartRequest(
        transport=transport,
        audio=parse_audio_format(msg),
        interim=_bool_field(msg, "interim", True),
        echo=_bool_field(msg, "echo", False),
        resume=resume,
        room=room,
    )


def _times(*values: float) -> list[float]:
    return [round(v, 3) for v in values]


def event_message(event: PipelineEvent) -> dict[str, Any]:
    """The server message (without `seq`) for a pipeline event."""
    if isinstance(event, SpeechStarted):
        msg: dict[str, Any] = {"type": "speech.start", "utterance_id": event.utterance_id, "start": round(event.start, 3)}
    elif isinstance(event, InterimTranscript):
        start, end = _times(event.start, event.end)
        msg = {"type": "transcript.interim", "utterance_id": event.utterance_id, "text": event.text, "start": start, "end": end}
    elif isinstance(event, FinalTranscript):
        start, end = _times(event.start, event.end)
        msg = {
            "type": "transcript.final",
            "utterance_id": event.utterance_id,
            "text": event.text,
            "start": start,
            "end": end,
            "reason": event.reason,
        }
        if event.words is not None:
            msg["words"] = [
                {"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3), "probability": round(w.probability, 3)}
                for w in event.words
            ]
    elif isinstance(event, SpeechEnded):
        msg = {"type": "speech.end", "utterance_id": event.utterance_id, "end": round(event.end, 3)}
    elif isinstance(event, PipelineNotice):
        return {"type": "status", "code": event.code, "message": event.message, **event.details}
    else:  # pragma: no cover - exhaustive over PipelineEvent
        raise TypeError(f"not a pipeline event: {event!r}")
    if event.participant is not None:
        msg["participant"] = event.participant
    return msg


def error_message(code: str, message: str, request_id: str | int | None = None, **extra: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if request_id is not None:
        msg["id"] = request_id
    msg.update(extra)
    return msg


def reply(msg_type: str, request_id: str | int | None, **fields: Any) -> dict[str, Any]:
    """A reply to a request, echoing its id when it had one."""
    msg: dict[str, Any] = {"type": msg_type}
    if request_id is not None:
        msg["id"] = request_id
    msg.update(fields)
    return msg
