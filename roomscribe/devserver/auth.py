"""Access tokens for the dev server: LiveKit JWTs verified with configured key pairs, and
`mint_join_token` for tools that join it with the development keys (the bench, the tests)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

import jwt
from livekit.api.access_token import AccessToken, Claims, TokenVerifier, VideoGrants


class AuthError(Exception):
    """A refused request: an HTTP status and a reason readable by the SDK's user."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class JoinGrant:
    """What a verified token allows its holder to do in one room."""

    identity: str
    name: str
    room: str
    metadata: str = ""
    kind: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    can_publish: bool = True
    can_subscribe: bool = True
    can_publish_data: bool = True
    can_publish_sources: tuple[str, ...] = ()
    hidden: bool = False
    agent: bool = False


def mint_join_token(identity: str, room: str, *, key: str = "devkey", secret: str = "secret",
                    name: str | None = None, ttl_s: float = 3600, **grants: Any) -> str:
    """A join token for ``room`` signed with a dev-server key pair (default: the development
    keys); ``grants`` override VideoGrants fields (``can_subscribe=False`` ...)."""
    grants.setdefault("room_join", True)
    video = VideoGrants(room=room, **grants)
    return (AccessToken(key, secret).with_identity(identity).with_name(name or identity)
            .with_grants(video).with_ttl(datetime.timedelta(seconds=ttl_s)).to_jwt())


def _issuer(token: str) -> str:
    """Read the (unverified) issuer so the matching secret can be chosen."""
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise AuthError(401, f"invalid token: {exc}") from exc
    return str(unverified.get("iss", ""))


class Authenticator:
    """Verifies LiveKit access tokens against a set of ``{api_key: api_secret}`` pairs."""

    def __init__(self, keys: dict[str, str]) -> None:
        if not keys:
            raise ValueError("at least one API key pair is required")
        self._keys = dict(keys)

    def verify(self, token: str | None) -> Claims:
        """Return the token's claims or raise :class:`AuthError` with a readable reason."""
        if not token:
            raise AuthError(401, "no access token: pass access_token or an Authorization: Bearer header")
        key = _issuer(token)
        secret = self._keys.get(key)
        if secret is None:
            raise AuthError(401, f"invalid token: unknown API key {key!r}")
        try:
            return TokenVerifier(key, secret).verify(token)
        except jwt.ExpiredSignatureError as exc:
            raise AuthError(401, "invalid token: token is expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise AuthError(401, "invalid token: token is not valid yet") from exc
        except jwt.InvalidSignatureError as exc:
            raise AuthError(401, "invalid token: signature is invalid (wrong API secret?)") from exc
        except jwt.PyJWTError as exc:
            raise AuthError(401, f"invalid token: {exc}") from exc

    def verify_join(self, token: str | None, room: str | None = None) -> JoinGrant:
        """Check a token for joining; ``room`` is the room the client asks for, if any."""
        claims = self.verify(token)
        video = claims.video or VideoGrants()
        if not video.room_join:
            raise AuthError(401, "permissions denied: token has no roomJoin grant")
        if not video.room:
            raise AuthError(401, "permissions denied: token names no room")
        if room and room != video.room:
            raise AuthError(401, f"permissions denied: token is for room {video.room!r}, not {room!r}")
        if not claims.identity:
            raise AuthError(401, "invalid token: identity is empty")
        sources = tuple(s.lower() for s in (video.can_publish_sources or ()))
        return JoinGrant(
            identity=claims.identity,
            name=claims.name or "",
            room=video.room,
            metadata=claims.metadata or "",
            kind=claims.kind or "",
            attributes=dict(claims.attributes or {}),
            can_publish=bool(video.can_publish),
            can_subscribe=bool(video.can_subscribe),
            can_publish_data=bool(video.can_publish_data),
            can_publish_sources=sources,
            hidden=bool(video.hidden),
            agent=bool(video.agent) or claims.kind == "agent",
        )

    def verify_admin(self, token: str | None, *, room: str | None = None, create: bool = False,
                     list_: bool = False) -> Claims:
        """Check a token for a RoomService call (roomCreate, roomList or roomAdmin grants)."""
        claims = self.verify(token)
        video = claims.video or VideoGrants()
        if create and not video.room_create:
            raise AuthError(403, "permissions denied: roomCreate grant required")
        if list_ and not video.room_list:
            raise AuthError(403, "permissions denied: roomList grant required")
        if room is not None:
            if not video.room_admin:
                raise AuthError(403, "permissions denied: roomAdmin grant required")
            if video.room and video.room != room:
                raise AuthError(403, f"permissions denied: token is for room {video.room!r}")
        return claims
