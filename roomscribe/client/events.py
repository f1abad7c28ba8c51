"""Typed events: the wire schema's server messages (control/schema.py), and the client's own.

`parse_event` validates a decoded JSON message against the schema and returns its struct (e.g.
`FinalTranscript`), which keeps the message as it arrived in `raw`. A type this client does not
know, or a message that does not fit the schema, becomes `Unknown` (its `error` says what did not
fit), so a newer server never breaks this client. Client-side happenings (connection changes,
resume outcomes, dropped audio) are `ClientNotice` events so they flow through the same iterator;
their codes (`NoticeCode`) are listed here and nowhere else.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import msgspec

from control.schema import (
    SERVER_MESSAGE_TYPES,
    AuthExpired,
    AuthExpiring,
    AuthRefreshed,
    Command,
    Error,
    FinalTranscript,
    Hello,
    InterimTranscript,
    Pong,
    PublishStart,
    PublishStop,
    RecordingReady,
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
    tag_of,
    with_raw,
)

#: Base of every event: `type`, `seq` (None unless the message is a session event), `subscription_id`
#: (set when a monitor subscription forwarded it) and `raw` (the message as it arrived).
Event = ServerMessage
#: The field of a JSON message that names its type (the schema's tag field).
TYPE_FIELD: str = str(ServerMessage.__struct_config__.tag_field)

__all__ = [
    "TYPE_FIELD",
    "AuthExpired",
    "AuthExpiring",
    "AuthRefreshed",
    "ClientNotice",
    "Command",
    "Error",
    "Event",
    "FinalTranscript",
    "Hello",
    "InterimTranscript",
    "NoticeCode",
    "Pong",
    "PublishStart",
    "PublishStop",
    "RecordingReady",
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


class NoticeCode(StrEnum):
    """The `code` of a `ClientNotice`: things the client itself reports, never sent on the wire."""

    CONNECTION_STATE = "connection.state"  # connecting / connected / disconnected (`retry_in_s`, `idle`)
    CONNECTION_DEAD = "connection.dead"  # the link was silent too long; reconnecting
    CONNECTION_FAILED = "connection.failed"  # the client gave up
    SESSION_RESUMED = "session.resumed"
    SESSION_RESTARTED = "session.restarted"  # the session could not be resumed; a new one replaced it
    SESSION_LOST = "session.lost"  # the session could not be resumed (events after `last_seq` may be missing)
    SUBSCRIPTION_RENEWED = "subscription.renewed"
    SUBSCRIPTION_LOST = "subscription.lost"
    AUTH_REFRESH_FAILED = "auth.refresh_failed"
    AUDIO_DROPPED = "audio.dropped"  # the audio buffer is full: the oldest audio is dropped


class ClientNotice(ServerMessage, tag="client.notice"):
    """Something the client itself reports: `code` is a `NoticeCode`, e.g. `connection.state`."""

    code: str = ""
    message: str = ""
    data: dict[str, Any] = msgspec.field(default_factory=dict)


def parse_event(raw: dict[str, Any]) -> Event:
    """The typed event for a server message (`Unknown` when it is not one this client can read)."""
    kind = raw.get(TYPE_FIELD)
    if kind not in SERVER_MESSAGE_TYPES:
        return with_raw(Unknown(), raw)
    try:
        return decode_server_message(raw)
    except msgspec.ValidationError as error:
        return with_raw(Unknown(error=f"{kind}: {error}"), raw)


def notice(code: NoticeCode, message: str, **data: Any) -> ClientNotice:
    """A client-side event; its `raw` mirrors the fields so printers can treat it like the rest."""
    code_text = str(code)  # a plain str in the event and its raw (NoticeCode compares equal to it)
    raw = {TYPE_FIELD: tag_of(ClientNotice), "code": code_text, "message": message, **data}
    return with_raw(ClientNotice(code=code_text, message=message, data=data), raw)
