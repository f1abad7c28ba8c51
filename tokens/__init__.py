"""Token service: LiveKit access tokens for clients and the agent, and control-socket auth."""

from tokens.control_tokens import AuthError, ControlClaims, mint_control_token, verify_control_token
from tokens.livekit_tokens import IssuedToken, mint_agent_token, mint_client_token

__all__ = [
    "AuthError",
    "ControlClaims",
    "IssuedToken",
    "mint_agent_token",
    "mint_client_token",
    "mint_control_token",
    "verify_control_token",
]
