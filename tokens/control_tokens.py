"""Control-socket authentication: HS256 JWTs signed with ROOMSCRIBE_CONTROL_SECRET.

`sub` is the user id; `exp` and `aud` = "roomscribe-control" are required, so no other JWT signed
with the same secret (a LiveKit token, say) passes as a control token. Optional claims widen what
the user may do: `multi_user` (transcribe every publisher of a room), `monitor` (subscribe to other
users' sessions), `record` (ask for a session's recording: `session.start {record: true}`); `rooms`
(a list of room names) narrows `multi_user` to those rooms. Error messages never contain the secret
or the token.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import jwt

ALGORITHM = "HS256"
#: The `aud` claim every control token carries and the server requires.
CONTROL_AUDIENCE = "roomscribe-control"
_AUDIENCE_HINT = f" (control tokens carry aud={CONTROL_AUDIENCE!r}; see docs/protocol.md)"
DEFAULT_TTL_S = 3600
#: Claims that grant extra rights; anything else in a token is ignored.
PERMISSION_CLAIMS = ("multi_user", "monitor", "record")
#: The claim listing the rooms a `multi_user` token may name (absent: any multi-user room).
ROOMS_CLAIM = "rooms"


class AuthError(Exception):
    """A refused control token; `code` is machine-readable, `message` is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ControlClaims:
    user: str
    expires_at: int
    permissions: frozenset[str] = field(default_factory=frozenset)
    #: The `rooms` claim: the only rooms a `multi_user` session may name; None when the token has none.
    rooms: frozenset[str] | None = None

    def allows(self, permission: str) -> bool:
        return permission in self.permissions


def mint_control_token(
    secret: str,
    user: str,
    *,
    ttl_s: int = DEFAULT_TTL_S,
    permissions: tuple[str, ...] = (),
    rooms: Sequence[str] | None = None,
) -> str:
    """Sign a control token for `user` (audience CONTROL_AUDIENCE), valid for `ttl_s` seconds;
    `rooms` (with the `multi_user` permission) lists the only rooms it may transcribe whole."""
    if not user:
        raise ValueError("user id must not be empty")
    unknown = set(permissions) - set(PERMISSION_CLAIMS)
    if unknown:
        raise ValueError(f"unknown permissions: {sorted(unknown)}; known: {list(PERMISSION_CLAIMS)}")
    if rooms is not None and "multi_user" not in permissions:
        raise ValueError("a 'rooms' claim needs the 'multi_user' permission")
    if isinstance(rooms, str) or (rooms is not None and not all(isinstance(room, str) and room for room in rooms)):
        raise ValueError("'rooms' must be a list of non-empty room names")
    now = int(time.time())
    claims: dict[str, object] = {"sub": user, "aud": CONTROL_AUDIENCE, "iat": now, "exp": now + int(ttl_s)}
    claims.update(dict.fromkeys(permissions, True))
    if rooms is not None:
        claims[ROOMS_CLAIM] = list(rooms)
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_control_token(secret: str, token: str | None, *, leeway_s: float = 5.0) -> ControlClaims:
    """Check signature, expiry, audience and subject; raise AuthError with a readable reason."""
    if not token:
        raise AuthError(
            "auth.missing_token",
            "no control token: send 'Authorization: Bearer <token>' or '?token=<token>'",
        )
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            leeway=leeway_s,
            audience=CONTROL_AUDIENCE,
            options={"require": ["exp", "sub", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("auth.token_expired", "the control token has expired; get a new one") from None
    except jwt.InvalidSignatureError:
        raise AuthError("auth.bad_signature", "the control token's signature does not verify") from None
    except jwt.MissingRequiredClaimError as exc:
        hint = _AUDIENCE_HINT if exc.claim == "aud" else ""
        raise AuthError("auth.malformed_token", f"the control token lacks the '{exc.claim}' claim{hint}") from None
    except jwt.InvalidAudienceError:
        raise AuthError(
            "auth.malformed_token",
            f"the token's 'aud' claim is not {CONTROL_AUDIENCE!r}, so it is not a control token{_AUDIENCE_HINT}",
        ) from None
    except jwt.InvalidAlgorithmError:
        raise AuthError("auth.malformed_token", f"the control token must be signed with {ALGORITHM}") from None
    except jwt.InvalidTokenError:
        raise AuthError("auth.malformed_token", "the control token is not a valid JWT") from None
    user = claims.get("sub")
    if not isinstance(user, str) or not user:
        raise AuthError("auth.malformed_token", "the control token's 'sub' must be a non-empty user id")
    permissions = frozenset(name for name in PERMISSION_CLAIMS if claims.get(name) is True)
    return ControlClaims(user=user, expires_at=int(claims["exp"]), permissions=permissions, rooms=_rooms(claims))


def _rooms(claims: dict[str, object]) -> frozenset[str] | None:
    """The `rooms` claim: absent → None; a list of non-empty strings → that set; else AuthError."""
    if ROOMS_CLAIM not in claims:
        return None
    rooms = claims[ROOMS_CLAIM]
    if not isinstance(rooms, list) or not all(isinstance(room, str) and room for room in rooms):
        raise AuthError("auth.malformed_token", f"the control token's '{ROOMS_CLAIM}' claim must be a list of room names")
    return frozenset(rooms)
