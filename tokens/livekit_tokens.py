"""LiveKit JWTs minted with `livekit-api`.

`VideoGrants` defaults can_publish, can_subscribe and can_publish_data to True and tokens to a
6 h lifetime, so every grant and the TTL are set explicitly here.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import jwt
from livekit import api

CLIENT_TTL_S = 300
AGENT_TTL_S = 600


@dataclass(frozen=True)
class IssuedToken:
    """A minted token and its expiry (Unix seconds, taken from the token itself)."""

    token: str
    expires_at: int


def _issue(access_token: api.AccessToken) -> IssuedToken:
    token = access_token.to_jwt()
    claims = jwt.decode(token, options={"verify_signature": False})
    return IssuedToken(token=token, expires_at=int(claims["exp"]))


def mint_client_token(
    api_key: str, api_secret: str, *, identity: str, room: str, ttl_s: int = CLIENT_TTL_S
) -> IssuedToken:
    """A client token: join one room, publish the microphone only, subscribe to nothing."""
    grants = api.VideoGrants(
        room_join=True,
        room=room,
        can_publish=True,
        can_publish_sources=["microphone"],
        can_subscribe=False,
        can_publish_data=False,
        hidden=False,
    )
    return _issue(
        api.AccessToken(api_key, api_secret)
        .with_identity(identity)
        .with_grants(grants)
        .with_ttl(datetime.timedelta(seconds=ttl_s))
    )


def mint_agent_token(
    api_key: str,
    api_secret: str,
    *,
    identity: str,
    room: str,
    ttl_s: int = AGENT_TTL_S,
    can_publish_data: bool = False,
) -> IssuedToken:
    """The agent's token: join one room hidden, subscribe only (data only when it publishes transcripts)."""
    grants = api.VideoGrants(
        room_join=True,
        room=room,
        can_publish=False,
        can_publish_sources=[],
        can_subscribe=True,
        can_publish_data=can_publish_data,
        hidden=True,
    )
    return _issue(
        api.AccessToken(api_key, api_secret)
        .with_identity(identity)
        .with_kind("agent")
        .with_grants(grants)
        .with_ttl(datetime.timedelta(seconds=ttl_s))
    )
