"""LiveKit room names and who may use which room: two namespaces under the configured prefix.

- Single-user rooms, `{prefix}u-{readable}-{hash}` (`user_timestamp`: `…-{ms}`): `readable` is the
  user id sanitised and cut short, `hash` is part of the SHA-256 of the exact user id, so two user
  ids never share a room however alike they look (`a@b` and `a_b`).
- Multi-user rooms, `{prefix}mu-…`: where a `multi_user` session may go without a `rooms` claim.

The two cannot overlap (`u-` vs `mu-`), so a multi-user session can never name a single-user room.
No sockets and no LiveKit here: just names and the rule.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Collection

from control.schema import ProtocolError

SINGLE_USER_NAMESPACE = "u-"
MULTI_USER_NAMESPACE = "mu-"
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


def multi_user_prefix(prefix: str) -> str:
    """The namespace of multi-user rooms, e.g. `roomscribe-mu-`."""
    return f"{prefix}{MULTI_USER_NAMESPACE}"


def check_multi_user_room(
    room: str, prefix: str, allowed: Collection[str] | None, request_id: str | int | None = None
) -> None:
    """Refuse (`room.not_allowed`) a multi-user room that is a single-user room, or that the token
    does not list (`allowed`, its `rooms` claim), or, with no such claim, lies outside `{prefix}mu-`."""
    if room.startswith(prefix + SINGLE_USER_NAMESPACE):
        raise ProtocolError(
            "room.not_allowed", f"rooms starting with {prefix + SINGLE_USER_NAMESPACE!r} are single-user rooms", request_id
        )
    if allowed is not None:
        if room not in allowed:
            raise ProtocolError("room.not_allowed", "this control token's 'rooms' claim does not list that room", request_id)
        return
    namespace = multi_user_prefix(prefix)
    if not room.startswith(namespace) or room == namespace:
        raise ProtocolError(
            "room.not_allowed",
            f"a multi-user room must be named {namespace!r} + a name (or be listed in the token's 'rooms' claim)",
            request_id,
        )
