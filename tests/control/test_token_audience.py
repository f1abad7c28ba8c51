"""Control tokens carry and require `aud = "roomscribe-control"`: a JWT signed with the control
secret for anything else (a LiveKit token, a token without an audience) is refused, over a real
server with HTTP 401 and the coded error."""

from __future__ import annotations

import time

import aiohttp
import jwt
import pytest

from tokens import CONTROL_AUDIENCE, AuthError, mint_client_token, mint_control_token, verify_control_token

SECRET = "test-secret-of-at-least-32-bytes-long!!"


def signed(secret: str, **claims: object) -> str:
    """An HS256 JWT for user "alice", valid for a minute, with `claims` added (None removes one)."""
    body: dict[str, object] = {"sub": "alice", "exp": int(time.time()) + 60, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, secret, algorithm="HS256")


def foreign_tokens(secret: str) -> dict[str, str]:
    """Tokens signed with the control secret that are not control tokens."""
    return {
        "no audience": signed(secret),
        "another audience": signed(secret, aud="some-other-service"),
        "a list without ours": signed(secret, aud=["livekit", "some-other-service"]),
        "a LiveKit client token": mint_client_token("key", secret, identity="alice", room="roomscribe-alice").token,
    }


def test_minted_control_tokens_carry_the_audience() -> None:
    claims = jwt.decode(mint_control_token(SECRET, "alice"), SECRET, algorithms=["HS256"], audience=CONTROL_AUDIENCE)
    assert claims["aud"] == CONTROL_AUDIENCE == "roomscribe-control"
    assert verify_control_token(SECRET, signed(SECRET, aud=CONTROL_AUDIENCE)).user == "alice"


@pytest.mark.parametrize("name", list(foreign_tokens(SECRET)))
def test_a_token_for_another_audience_is_refused(name: str) -> None:
    with pytest.raises(AuthError) as info:
        verify_control_token(SECRET, foreign_tokens(SECRET)[name])
    assert info.value.code == "auth.malformed_token"
    assert "'aud'" in info.value.message and CONTROL_AUDIENCE in info.value.message
    assert SECRET not in info.value.message


async def test_the_control_socket_refuses_tokens_for_another_audience_with_401(control) -> None:
    for name, token in foreign_tokens(control.secret).items():
        headers = {"Authorization": f"Bearer {token}"}
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await control.http.ws_connect(control.server.url, headers=headers)
        assert info.value.status == 401, name
        async with control.http.get(control.server.url.replace("ws://", "http://"), headers=headers) as response:
            assert response.status == 401, name
            body = await response.json()
            assert body["error"]["code"] == "auth.malformed_token", name
            assert CONTROL_AUDIENCE in body["error"]["message"], name
    # A control token from the same secret still opens the socket.
    client = await control.connect("alice")
    assert client.events[0]["user"] == "alice"
    await client.close()
