"""LiveKit room names and which rooms a multi-user session may name.

- Single-user rooms, `{prefix}u-{readable}-{hash}` (`user_timestamp`: `…-{ms}`): `readable` is the
  user id sanitised and cut short, `hash` is part of the SHA-256 of the exact user id, so two user
  ids never share a room however alike they look (`a@b` and `a_b`).
- Multi-user rooms are the app's: any room outside the single-user namespace `{prefix}u-`, or, when
  the token has a `rooms` claim, only the rooms it lists. A multi-user session can never name a
  single-user room, so it never reaches another user's audio.

No sockets and no LiveKit here: just names and the rule.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Collection

from control.schema import ProtocolError

SINGLE_USER_NAMESPACE = "u-"
#: Characters of the user id kept in the readable part (the rest become `_`), and how many.
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
READABLE_CHARS = 32
#: Hex digits of SHA-256(user id) in a single-user room name (96 bits: no accidental collision).
HASH_CHARS = 24
#: The longest room name the server makes or accepts (the schema's limit on `session.start.room`);
#: with a prefix of at most config.MAX_ROOM_PREFIX a single-user room stays within it.
MAX_ROOM_NAME = 128


def user_hash(user: str) -> str:
    """A short, stable digest of the exact user id (lone surrogates included)."""
    return hashlib.sha256(user.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]


def room_name(strategy: str, prefix: str, user: str, now: float | None = None) -> str:
    """A user's single-user room: `user` is one room per user, `user_timestamp` one per session."""
    readable = _UNSAFE.sub("_", user)[:READABLE_CHARS]
    base = f"{prefix}{SINGLE_USER_NAMESPACE}{readable}-{user_hash(user)}"
    if strategy == "user":
        return base
    if strategy == "user_timestamp":
        return f"{base}-{int((now if now is not None else time.time()) * 1000)}"
    raise ValueError(f"unknown room strategy {strategy!r}")


def check_multi_user_room(
    room: str, prefix: str, allowed: Collection[str] | None, request_id: str | int | None = None
) -> None:
    """Refuse (`room.not_allowed`) a multi-user room in the single-user namespace `{prefix}u-`, or one
    that the token's `rooms` claim (`allowed`; None: no claim, any other room) does not list."""
    namespace = prefix + SINGLE_USER_NAMESPACE
    if room.startswith(namespace):
        raise ProtocolError("room.not_allowed", f"rooms starting with {namespace!r} are single-user rooms", request_id)
    if allowed is not None and room not in allowed:
        raise ProtocolError("room.not_allowed", "this control token's 'rooms' claim does not list that room", request_id)
