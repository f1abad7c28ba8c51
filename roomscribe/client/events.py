"""Typed events: one dataclass per server message type, each keeping the raw message in `raw`.

`parse_event` turns a decoded JSON message into its dataclass (unknown types become `Unknown`,
so a newer server never breaks this client). Client-side happenings (connection changes, resume
outcomes, dropped audio) are `ClientNotice` events so they flow through the same iterator.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar


@dataclass(frozen=True)
class Event:
    """Base of every event; `raw` is the message exactly as it arrived."""

    type: ClassVar[str] = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def seq(self) -> int | None:
        return self.raw.get("seq")

    @property
    def subscription_id(self) -> str | None:
        """Set when the event was forwarded by a monitor subscription."""
        return self.raw.get("subscription_id") if self.type not in ("subscribed", "unsubscribed") else None


@dataclass(frozen=True)
class Hello(Event):
    type: ClassVar[str] = "hello"
    protocol: int = 1
    user: str = ""
    transports: list[str] = field(default_factory=list)
    default_transport: str = "ws"


@dataclass(frozen=True)
class SessionReady(Event):
    type: ClassVar[str] = "session.ready"
    session_id: str = ""
    transport: str = "ws"
    room: str = ""
    resumed: bool = False
    last_seq: int = 0
    audio: dict[str, Any] | None = None
    livekit: dict[str, Any] | None = None


@dataclass(frozen=True)
class SpeechStart(Event):
    type: ClassVar[str] = "speech.start"
    utterance_id: str = ""
    start: float = 0.0
    participant: str | None = None


@dataclass(frozen=True)
class SpeechEnd(Event):
    type: ClassVar[str] = "speech.end"
    utterance_id: str = ""
    end: float = 0.0
    participant: str | None = None


@dataclass(frozen=True)
class InterimTranscript(Event):
    type: ClassVar[str] = "transcript.interim"
    utterance_id: str = ""
    text: str = ""
    start: float = 0.0
    end: float = 0.0
    participant: str | None = None


@dataclass(frozen=True)
class FinalTranscript(Event):
    type: ClassVar[str] = "transcript.final"
    utterance_id: str = ""
    text: str = ""
    start: float = 0.0
    end: float = 0.0
    reason: str = ""
    words: list[dict[str, Any]] | None = None
    participant: str | None = None


@dataclass(frozen=True)
class PublishStart(Event):
    type: ClassVar[str] = "publish.start"
    reason: str | None = None


@dataclass(frozen=True)
class PublishStop(Event):
    type: ClassVar[str] = "publish.stop"
    reason: str | None = None


@dataclass(frozen=True)
class Token(Event):
    type: ClassVar[str] = "token"
    token: str = field(default="", repr=False)
    expires_at: float = 0.0


@dataclass(frozen=True)
class Status(Event):
    type: ClassVar[str] = "status"
    code: str = ""
    message: str = ""


@dataclass(frozen=True)
class SessionEnded(Event):
    type: ClassVar[str] = "session.ended"
    session_id: str = ""
    reason: str = ""


@dataclass(frozen=True)
class Pong(Event):
    type: ClassVar[str] = "pong"
    time: float = 0.0


@dataclass(frozen=True)
class Subscribed(Event):
    type: ClassVar[str] = "subscribed"
    subscription_id: str = ""  # type: ignore[assignment]
    session_id: str | None = None
    user: str | None = None
    events: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Unsubscribed(Event):
    type: ClassVar[str] = "unsubscribed"
    subscription_id: str = ""  # type: ignore[assignment]


@dataclass(frozen=True)
class Error(Event):
    type: ClassVar[str] = "error"
    code: str = ""
    message: str = ""
    suppressed: int | None = None


@dataclass(frozen=True)
class Unknown(Event):
    """A message type this client does not know (kept so nothing is hidden)."""

    type: ClassVar[str] = "unknown"


@dataclass(frozen=True)
class ClientNotice(Event):
    """Something the client itself reports: `code` is e.g. `connection.state`, `resume.failed`."""

    type: ClassVar[str] = "client.notice"
    code: str = ""
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        Hello, SessionReady, SpeechStart, SpeechEnd, InterimTranscript, FinalTranscript, PublishStart,
        PublishStop, Token, Status, SessionEnded, Pong, Subscribed, Unsubscribed, Error,
    )
}


def parse_event(raw: dict[str, Any]) -> Event:
    """The typed event for a server message; fields it lacks keep their defaults."""
    cls = EVENT_TYPES.get(str(raw.get("type")), Unknown)
    names = {f.name for f in fields(cls)} - {"raw"}
    return cls(raw=raw, **{k: v for k, v in raw.items() if k in names})


def notice(code: str, message: str, **data: Any) -> ClientNotice:
    """A client-side event; its `raw` mirrors the fields so printers can treat it like the rest."""
    raw = {"type": ClientNotice.type, "code": code, "message": message, **data}
    return ClientNotice(raw=raw, code=code, message=message, data=data)
