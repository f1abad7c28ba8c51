"""Admission control: each cap answered with its coded error on a real server, and the rules without sockets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import numpy as np
import pytest

from control.admission import (
    RETRY_AFTER_S,
    SESSIONS_PER_CORE,
    Limits,
    SocketCount,
    usable_cores,
)
from control.config import ConfigError, Settings
from control.schema import CLOSE_START_TIMEOUT, CLOSE_TRY_AGAIN_LATER
from control_harness import ServerHandle, serving
from roomscribe.client.audio_files import read_wav
from speech_samples import JFK, JFK_TEXT, pcm_frames, wer

pytestmark = pytest.mark.timeout(120)


# -- the rules --------------------------------------------------------------------------------------
def test_socket_count_caps_total_and_per_user() -> None:
    count = SocketCount(Limits(max_sockets=3, max_sockets_per_user=2))
    assert count.admit("alice") is None and count.admit("alice") is None
    refused = count.admit("alice")
    assert refused is not None and refused.code == "limit.sockets_per_user" and refused.retry_after == RETRY_AFTER_S
    assert count.admit("bob") is None
    refused = count.admit("carol")
    assert refused is not None and refused.code == "limit.sockets" and refused.retry_after == RETRY_AFTER_S
    assert count.total == 3 and count.of("alice") == 2
    count.release("alice")
    assert count.admit("carol") is None and count.total == 3


def test_zero_means_no_cap() -> None:
    limits = Limits()
    count = SocketCount(limits)
    assert all(count.admit("alice") is None for _ in range(1000))
    assert limits.session_refusal(10_000, replacing=False) is None
    assert limits.subscription_refusal(10_000) is None


def test_session_cap_lets_a_user_replace_their_own_session() -> None:
    limits = Limits(max_sessions=2)
    assert limits.session_refusal(1, replacing=False) is None
    refused = limits.session_refusal(2, replacing=False)
    assert refused is not None and refused.code == "limit.sessions" and refused.retry_after == RETRY_AFTER_S
    assert limits.session_refusal(2, replacing=True) is None


def test_settings_read_the_caps_and_derive_the_session_cap() -> None:
    settings = Settings.from_env({})
    assert settings.max_sessions is None
    assert Limits.from_settings(settings).max_sessions == SESSIONS_PER_CORE * usable_cores()
    env = {
        "ROOMSCRIBE_MAX_SESSIONS": "3",
        "ROOMSCRIBE_MAX_SOCKETS": "40",
        "ROOMSCRIBE_MAX_SOCKETS_PER_USER": "4",
        "ROOMSCRIBE_MAX_SUBSCRIPTIONS_PER_SOCKET": "5",
        "ROOMSCRIBE_START_TIMEOUT_S": "7.5",
        "ROOMSCRIBE_MAX_SESSION_S": "3600",
        "ROOMSCRIBE_WS_AUDIO_RATE": "2",
        "ROOMSCRIBE_WS_AUDIO_BURST_S": "4",
        "ROOMSCRIBE_WS_MAX_BACKLOG_S": "0",
    }
    limits = Limits.from_settings(Settings.from_env(env))
    assert limits == Limits(
        max_sessions=3,
        max_sockets=40,
        max_sockets_per_user=4,
        max_subscriptions_per_socket=5,
        start_timeout_s=7.5,
        max_session_s=3600,
    )
    assert Settings.from_env({"ROOMSCRIBE_MAX_SESSIONS": "auto"}).max_sessions is None
    assert Settings.from_env({"ROOMSCRIBE_MAX_SESSIONS": "0"}).max_sessions == 0
    with pytest.raises(ConfigError, match="ROOMSCRIBE_MAX_SOCKETS_PER_USER"):
        Settings.from_env({"ROOMSCRIBE_MAX_SOCKETS_PER_USER": "-1"})
    with pytest.raises(ConfigError, match="ROOMSCRIBE_WS_AUDIO_RATE"):
        Settings.from_env({"ROOMSCRIBE_WS_AUDIO_RATE": "0.5"})


# -- on a real server -------------------------------------------------------------------------------
async def refused_socket(handle: ServerHandle, user: str) -> tuple[dict[str, Any], int | None]:
    """Connect as `user` to a server that refuses the socket: its first message and the close code."""
    ws = await handle.http.ws_connect(handle.server.url, headers={"Authorization": f"Bearer {handle.token(user)}"})
    first = await ws.receive(timeout=10)
    assert first.type == aiohttp.WSMsgType.TEXT, first
    closing = await ws.receive(timeout=10)
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), closing
    await ws.close()
    return json.loads(first.data), ws.close_code


async def sockets_open(handle: ServerHandle, count: int) -> None:
    """Wait until the server counts `count` open control sockets."""
    while True:
        async with handle.http.get(handle.server.http_url + "/healthz") as response:
            if (await response.json())["sockets"] == count:
                return
        await asyncio.sleep(0.02)


async def test_sockets_per_user_over_the_cap_get_an_error_and_try_again_later(engine) -> None:
    async with serving(engine, max_sockets_per_user=2) as handle:
        first = await handle.connect("alice")
        await handle.connect("alice")
        error, code = await refused_socket(handle, "alice")
        assert error["type"] == "error" and error["code"] == "limit.sockets_per_user"
        assert error["retry_after"] == RETRY_AFTER_S
        assert code == CLOSE_TRY_AGAIN_LATER
        other = await handle.connect("bob")  # another user is not affected
        await other.send(type="ping", id="p")
        await other.wait_type("pong", id="p")
        await first.close()
        await sockets_open(handle, 2)
        again = await handle.connect("alice")
        await again.send(type="ping", id="p")
        await again.wait_type("pong", id="p")


async def test_sockets_in_total_over_the_cap_get_an_error(engine) -> None:
    async with serving(engine, max_sockets=2) as handle:
        await handle.connect("alice")
        await handle.connect("bob")
        error, code = await refused_socket(handle, "carol")
        assert error["code"] == "limit.sockets" and error["retry_after"] == RETRY_AFTER_S
        assert code == CLOSE_TRY_AGAIN_LATER


async def test_sessions_over_the_cap_are_refused_with_retry_after(engine) -> None:
    async with serving(engine, max_sessions=1) as handle:
        alice = await handle.connect("alice")
        await alice.send(type="session.start", id="a")
        await alice.wait_type("session.ready", id="a")
        bob = await handle.connect("bob")
        await bob.send(type="session.start", id="b")
        refused = await bob.wait_type("error", id="b")
        assert refused["code"] == "limit.sessions" and refused["retry_after"] == RETRY_AFTER_S
        # The socket stays open, and a user at the cap may still replace their own session.
        await bob.send(type="ping", id="p")
        await bob.wait_type("pong", id="p")
        alice_again = await handle.connect("alice")
        await alice_again.send(type="session.start", id="a2")
        await alice_again.wait_type("session.ready", id="a2")
        await alice.wait_type("session.ended", reason="replaced")
        await alice_again.send(type="session.stop", id="stop")
        await alice_again.wait_type("session.ended", reason="stopped")
        await bob.send(type="session.start", id="b2")
        await bob.wait_type("session.ready", id="b2")


async def test_subscriptions_per_socket_are_capped(engine) -> None:
    async with serving(engine, max_subscriptions_per_socket=2) as handle:
        watcher = await handle.connect("dana")
        for request_id in ("s1", "s2"):
            await watcher.send(type="subscribe", id=request_id, user="dana")
            await watcher.wait_type("subscribed", id=request_id)
        await watcher.send(type="subscribe", id="s3", user="dana")
        refused = await watcher.wait_type("error", id="s3")
        assert refused["code"] == "limit.subscriptions" and "retry_after" not in refused
        first = watcher.of_type("subscribed")[0]["subscription_id"]
        await watcher.send(type="unsubscribe", id="u", subscription_id=first)
        await watcher.wait_type("unsubscribed", id="u")
        await watcher.send(type="subscribe", id="s4", user="dana")
        await watcher.wait_type("subscribed", id="s4")


async def test_a_socket_that_starts_nothing_in_time_is_told_and_closed(engine) -> None:
    async with serving(engine, start_timeout_s=1.0) as handle:
        idle = await handle.connect("idle")
        started = await handle.connect("busy")
        monitor = await handle.connect("ops")
        await started.send(type="session.start", id="s")
        await started.wait_type("session.ready", id="s")
        await monitor.send(type="subscribe", id="m", user="ops")
        await monitor.wait_type("subscribed", id="m")

        error = await idle.wait_type("error", timeout=10)
        assert error["code"] == "session.start_timeout"
        await asyncio.wait_for(idle.closed.wait(), 10)
        assert idle.ws.close_code == CLOSE_START_TIMEOUT
        # The socket with a session and the one with a subscription are still served.
        for client in (started, monitor):
            await client.send(type="ping", id="after")
            await client.wait_type("pong", id="after")
        assert not started.of_type("error") and not monitor.of_type("error")


async def test_a_session_past_the_maximum_length_is_finalised_and_ended(engine) -> None:
    async with serving(engine, max_session_s=3.0) as handle:
        client = await handle.connect("long")
        await client.send(type="session.start", id="s")
        await client.wait_type("session.ready", id="s")
        samples = read_wav(JFK).samples
        for frame in pcm_frames(np.asarray(samples)):  # well within 3 s: the utterance is still open
            await client.ws.send_bytes(frame)
        ended = await client.wait_type("session.ended", timeout=60)
        assert ended["reason"] == "max_duration"
        finals = client.of_type("transcript.final")
        assert finals and all(client.events.index(f) < client.events.index(ended) for f in finals)
        assert wer(JFK_TEXT, " ".join(f["text"] for f in finals)) <= 0.15


async def test_the_client_library_waits_idle_after_the_start_timeout_and_reconnects_when_asked(engine) -> None:
    """A ControlClient that starts nothing is closed (4008); it stays disconnected instead of
    reconnecting in a loop, and the next request opens a new socket."""
    from roomscribe.client import ControlClient
    from roomscribe.client.events import ClientNotice

    async with serving(engine, start_timeout_s=0.5) as handle:
        client = ControlClient(handle.server.url, handle.token("later"))
        idle = asyncio.get_running_loop().create_future()

        def on_event(event: object) -> None:
            is_idle = isinstance(event, ClientNotice) and event.code == "connection.state" and event.data.get("idle")
            if is_idle and not idle.done():
                idle.set_result(client.stats.connects)

        client.on(on_event)
        await client.connect()
        assert await asyncio.wait_for(idle, 15) == 1  # the supervisor now waits for a request
        ready = await client.start_session(transport="ws", interim=False)
        assert ready.session_id and client.stats.connects == 2
        await client.stop_session()
        await client.close()
