"""A live socket's control token runs out: `auth.expiring`, `auth.refresh`, `auth.expired`, close 4001."""

from __future__ import annotations

import time

import jwt
import pytest

from control.auth_expiry import TokenExpiry
from control.schema import CLOSE_TOKEN_EXPIRED, decode_server_message
from control_harness import serving

pytestmark = pytest.mark.timeout(60)

#: Short-lived tokens: no leeway past `exp`, and a short wait between `auth.expired` and the close.
SHORT = {"control_token_leeway_s": 0.0, "auth_expired_grace_s": 0.5}


def test_the_notice_comes_at_most_half_the_remaining_life_before_expiry() -> None:
    expiry = TokenExpiry(warn_s=60.0, leeway_s=5.0, grace_s=10.0)
    assert expiry.warn_at(10_000, accepted_at=6_400) == 10_000 - 60  # an hour-long token: a minute before
    assert expiry.warn_at(10_000, accepted_at=9_960) == 10_000 - 20  # 40 s left: told after 20 s
    assert expiry.warn_at(10_000, accepted_at=10_001) == 10_000  # already past exp: at once
    assert expiry.expired_at(10_000) == 10_005 and expiry.close_at(10_000) == 10_015


async def test_an_unrefreshed_token_expires_then_the_socket_closes_and_the_session_resumes(engine) -> None:
    async with serving(engine, **SHORT) as handle:
        client = await handle.connect("ephemeral", token=handle.token("ephemeral", ttl_s=2))
        await client.send(type="session.start", id=1)
        ready = await client.wait_type("session.ready", id=1)
        expiring = await client.wait_type("auth.expiring")
        expired = await client.wait_type("auth.expired")
        assert expiring["expires_at"] == expired["expires_at"] and expired["close_in_s"] == 0.5
        assert time.time() >= expired["expires_at"] - 0.05  # not before exp (no leeway here)
        for message in (expiring, expired):
            decode_server_message(message, exact=True)  # the schema's, field for field
        # Until the close only auth.refresh and ping are served.
        await client.send(type="subscribe", id="s", user="ephemeral")
        assert (await client.wait_type("error", id="s"))["code"] == "auth.expired"
        await client.send(type="ping", id="p")
        await client.wait_type("pong", id="p")
        await client.closed.wait()
        assert client.ws.close_code == CLOSE_TOKEN_EXPIRED
        # The session waits for a resume with a fresh token.
        again = await handle.connect("ephemeral")
        await again.send(type="session.start", id=2, resume={"session_id": ready["session_id"], "last_seq": 0})
        assert (await again.wait_type("session.ready", id=2))["resumed"] is True
        await again.close()


async def test_a_fresh_token_keeps_the_socket_open_past_the_old_expiry(engine) -> None:
    async with serving(engine, **SHORT) as handle:
        client = await handle.connect("renewed", token=handle.token("renewed", ttl_s=2))
        first = await client.wait_type("auth.expiring")
        await client.send(type="auth.refresh", id="r", token=handle.token("renewed", ttl_s=4))
        refreshed = await client.wait_type("auth.refreshed", id="r")
        assert refreshed["expires_at"] > first["expires_at"]
        # The next notice is about the new token, and it comes after the old one would have expired.
        second = await client.wait_for(lambda e: e["type"] == "auth.expiring" and e["expires_at"] == refreshed["expires_at"])
        assert time.time() > first["expires_at"]
        assert not client.of_type("auth.expired") and not client.closed.is_set()
        index = client.events.index
        assert index(first) < index(refreshed) < index(second)
        for message in client.events:  # every auth.* message is the schema's, field for field
            decode_server_message(message, exact=True)
        await client.send(type="ping", id="p")
        await client.wait_type("pong", id="p")
        await client.close()


async def test_a_refresh_with_a_bad_token_is_refused_and_the_socket_keeps_its_token(engine) -> None:
    async with serving(engine, **SHORT) as handle:
        client = await handle.connect("careful")
        secret = handle.secret
        now = int(time.time())
        refusals = {
            "someone else": (handle.token("mallory"), "auth.wrong_user"),
            "expired": (handle.token("careful", ttl_s=-60), "auth.invalid_token"),
            "wrong secret": (jwt.encode({"sub": "careful", "aud": "roomscribe-control", "exp": now + 60}, "x" * 32,
                                        algorithm="HS256"), "auth.invalid_token"),
            "livekit audience": (jwt.encode({"sub": "careful", "iss": "APIkey", "exp": now + 60, "video": {}}, secret,
                                            algorithm="HS256"), "auth.invalid_token"),
            "not a jwt": ("not-a-token", "auth.invalid_token"),
        }
        for name, (token, code) in refusals.items():
            await client.send(type="auth.refresh", id=name, token=token)
            error = await client.wait_type("error", id=name)
            assert error["code"] == code, (name, error)
            assert token not in error["message"]
        await client.send(type="ping", id="p")
        await client.wait_type("pong", id="p")
        assert not client.of_type("auth.refreshed")
        await client.close()
