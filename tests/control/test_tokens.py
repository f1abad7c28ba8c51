"""Token service: exact grants and lifetimes, and control-socket auth over a real server."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import aiohttp
import jwt
import pytest
from livekit import api

from tokens import AuthError, mint_agent_token, mint_client_token, mint_control_token, verify_control_token

KEY, SECRET = "testkey", "test-secret-of-at-least-32-bytes-long!!"


def decode(token: str) -> dict:
    return jwt.decode(token, SECRET, algorithms=["HS256"], issuer=KEY)


def test_client_token_grants_and_ttl_exactly() -> None:
    issued = mint_client_token(KEY, SECRET, identity="alice", room="roomscribe-alice")
    claims = decode(issued.token)
    assert claims["sub"] == "alice"
    assert claims["exp"] - claims["nbf"] == 300
    assert issued.expires_at == claims["exp"]
    assert claims["video"] == {
        "roomJoin": True,
        "room": "roomscribe-alice",
        "canPublish": True,
        "canPublishSources": ["microphone"],
        "canSubscribe": False,
        "canPublishData": False,
        "hidden": False,
    }
    verified = api.TokenVerifier(KEY, SECRET).verify(issued.token)
    assert verified.video is not None and verified.video.can_subscribe is False


def test_client_token_ttl_is_configurable() -> None:
    claims = decode(mint_client_token(KEY, SECRET, identity="bob", room="r", ttl_s=120).token)
    assert claims["exp"] - claims["nbf"] == 120


def test_agent_token_grants_and_ttl_exactly() -> None:
    claims = decode(mint_agent_token(KEY, SECRET, identity="agent-r", room="r").token)
    assert claims["sub"] == "agent-r"
    assert claims["exp"] - claims["nbf"] == 600
    assert claims["kind"] == "agent"
    video = claims["video"]
    assert video["roomJoin"] is True and video["room"] == "r"
    assert video["canSubscribe"] is True
    assert video["canPublish"] is False
    assert video["canPublishData"] is False
    assert video["hidden"] is True


def test_control_token_roundtrip_and_permissions() -> None:
    token = mint_control_token(SECRET, "carol", ttl_s=60, permissions=("monitor",))
    claims = verify_control_token(SECRET, token)
    assert claims.user == "carol"
    assert claims.allows("monitor") and not claims.allows("multi_user")
    assert abs(claims.expires_at - (time.time() + 60)) < 5


@pytest.mark.parametrize(
    "token, code",
    [
        (None, "auth.missing_token"),
        ("not-a-jwt", "auth.malformed_token"),
        (jwt.encode({"sub": "x"}, SECRET, algorithm="HS256"), "auth.malformed_token"),  # no exp
        (jwt.encode({"exp": int(time.time()) + 60}, SECRET, algorithm="HS256"), "auth.malformed_token"),  # no sub
        (mint_control_token("another-secret-of-at-least-32-bytes!!", "x"), "auth.bad_signature"),
        (mint_control_token(SECRET, "x", ttl_s=-60), "auth.token_expired"),
    ],
)
def test_control_token_refusals(token: str | None, code: str) -> None:
    with pytest.raises(AuthError) as info:
        verify_control_token(SECRET, token)
    assert info.value.code == code
    assert SECRET not in info.value.message


async def test_control_socket_refuses_bad_tokens_with_401(control) -> None:
    url = control.server.url
    secret = control.secret
    cases = {
        "auth.missing_token": {},
        "auth.malformed_token": {"Authorization": "Bearer garbage"},
        "auth.bad_signature": {"Authorization": "Bearer " + mint_control_token("x" * 40, "alice")},
        "auth.token_expired": {"Authorization": "Bearer " + mint_control_token(secret, "alice", ttl_s=-60)},
    }
    for code, headers in cases.items():
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await control.http.ws_connect(url, headers=headers)
        assert info.value.status == 401, code
        # The same request over plain HTTP shows the JSON body.
        http_url = url.replace("ws://", "http://")
        async with control.http.get(http_url, headers=headers) as response:
            assert response.status == 401
            body = await response.json()
            assert body["error"]["code"] == code
            assert body["error"]["message"]
            assert secret not in await response.text()


async def test_control_socket_accepts_query_token(control) -> None:
    ws = await control.http.ws_connect(control.server.url + "?token=" + control.token("dave"))
    hello = await ws.receive_json(timeout=5)
    assert hello["type"] == "hello" and hello["user"] == "dave" and hello["protocol"] == 1
    await ws.close()


def test_cli_token_prints_a_verifiable_token(tmp_path) -> None:
    env = {**os.environ, "ROOMSCRIBE_CONTROL_SECRET": SECRET}
    out = subprocess.run(
        [sys.executable, "-m", "roomscribe.cli", "--env-file", str(tmp_path / "none"), "token", "--user", "erin", "--ttl", "90"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )
    claims = verify_control_token(SECRET, out.stdout.strip())
    assert claims.user == "erin"
    assert SECRET not in out.stdout + out.stderr


def test_cli_token_without_secret_fails_clearly(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ROOMSCRIBE_CONTROL_SECRET"}
    out = subprocess.run(
        [sys.executable, "-m", "roomscribe.cli", "--env-file", str(tmp_path / "none"), "token", "--user", "x"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2
    assert "ROOMSCRIBE_CONTROL_SECRET" in out.stderr
