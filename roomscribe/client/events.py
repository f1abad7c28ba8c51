"""Typed events: the wire schema's server messages (control/schema.py), and the client's own.

`parse_event` validates a decoded JSON message against the schema and returns its struct (e.g.
`FinalTranscript`), which keeps the message as it arrived in `raw`. A type this client does not
know, or a message that does not fit the schema, becomes `Unknown` (its `error` says what did not
fit), so a newer server never breaks this client. Client-side happenings (connection changes,
resume outcomes, dropped audio) are `ClientNotice` events so they flow through the same iterator.
"""

from __future__ import annotations

from typing import Any

import msgspec

from control.schema import (
    SERVER_MESSAGE_TYPES,
    AuthExpired,
    AuthExpiring,
    AuthRefreshed,
    Error,
    FinalTranscript,
    Hello,
    InterimTranscript,
    Pong,
    PublishStart,
    PublishStop,
    ServerMessage,
    SessionEnded,
    SessionReady,
    SpeechEnd,
    SpeechStart,
    Status,
    Subscribed,
    Token,
    Unsubscribed,
    decode_server_message,
    with_raw,
)

#: Base of every event: `type`, `seq` (None unless the message is a session event), `subscription_id`
#: (set when a monitor subscription forwarded it) and `raw` (the message as it arrived).
Event = ServerMessage

__all__ = [
    "AuthExpired",
    "AuthExpiring",
    "AuthRefreshed",
    "ClientNotice",
    "Error",
    "Event",
    "FinalTranscript",
    "Hello",
    "InterimTranscript",
    "Pong",
    "PublishStart",
    "PublishStop",
    "SessionEnded",
    "SessionReady",
    "SpeechEnd",
    "SpeechStart",
    "Status",
    "Subscribed",
    "Token",
    "Unknown",
    "Unsubscribed",
    "notice",
    "parse_event",
]


class Unknown(ServerMessage, tag="unknown"):
    """A message this client cannot use: a type it does not know (`error` is None), or a known type
    whose fields do not fit the schema (`error` says which). `raw` holds the message."""

    error: str | None = None


class ClientNotice(ServerMessage, tag="client.notice"):
    """Something the client itself reports: `code` is e.g. `connection.state`, `resume.failed`."""

    code: str = ""
    message: str = ""
    data: dict[str, Any] = msgspec.field(default_factory=dict)


def parse_event(raw: dict[str, Any]) -> Event:
    """The typed event for a server message (`Unknown` when it is not one this client can read)."""
    if raw.get("type") not in SERVER_MESSAGE_TYPES:
        return with_raw(Unknown(), raw)
    try:
        return decode_server_message(raw)
    except msgspec.ValidationError as error:
        return with_raw(Unknown(error=f"{raw.get('type')}: {error}"), raw)


def notice(code: str, message: str, **data: Any) -> ClientNotice:
    """A client-side event; its `raw` mirrors the fields so printers can treat it like the rest."""
    raw = {"type": "client.notice", "code": code, "message": message, **data}
    return with_raw(ClientNotice(code=code, message=message, data=data), raw)
