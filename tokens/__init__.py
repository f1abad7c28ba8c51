"""Token service: LiveKit access tokens for clients and the agent, and control-socket auth."""

from tokens.control_secret import WeakSecretError, check_control_secret, new_control_secret
from tokens.control_tokens import (
    CONTROL_AUDIENCE,
    AuthError,
    ControlClaims,
    mint_control_token,
    verify_control_token,
)
from tokens.livekit_tokens import IssuedToken, mint_agent_token, mint_client_token

__all__ = [
    "CONTROL_AUDIENCE",
    "AuthError",
    "ControlClaims",
    "IssuedToken",
    "WeakSecretError",
    "check_control_secret",
    "mint_agent_token",
    "mint_client_token",
    "mint_control_token",
    "new_control_secret",
    "verify_control_token",
]
