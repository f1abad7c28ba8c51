"""ControlClient keeps its socket open past its control token's expiry with a token provider."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from control_harness import ServerHandle, serving
from roomscribe.client.audio_files import read_wav
from roomscribe.client.control_client import ControlClient
from roomscribe.client.events import ClientNotice, Event
from roomscribe.client.options import ClientOptions, ConnectionState
from roomscribe.client.sources import numpy_stream
from roomscribe.client.stream import send_stream
from roomscribe.common.backoff import Backoff
from speech_samples import JFK, JFK_TEXT, silence, wer

pytestmark = pytest.mark.timeout(180)

#: Tokens of a few seconds; finishing the last utterance is not bounded below what a busy test machine needs.
SHORT = {"control_token_leeway_s": 0.0, "auth_expired_grace_s": 0.5, "finish_timeout_s": 90.0}


def options() -> ClientOptions:
    return ClientOptions(backoff=Backoff(base_s=0.1, cap_s=0.4, attempts=20), ping_interval_s=0.5, dead_after_s=3.0)


async def seen(events: list[Event], predicate, timeout: float = 30.0) -> None:
    async def wait() -> None:
        while not any(predicate(e) for e in events):  # noqa: ASYNC110  # the client's callback appends; no event to wait on
            await asyncio.sleep(0.02)

    await asyncio.wait_for(wait(), timeout)


async def test_the_provider_is_asked_on_auth_expiring_and_the_socket_stays_open(engine) -> None:
    async with serving(engine, **SHORT) as handle:
        calls: list[int] = []

        def provider() -> str:
            calls.append(1)
            return handle.token("refresher", ttl_s=2)  # every token lives 2 s

        client = ControlClient(handle.server.url, provider, options=options())
        events: list[Event] = []
        client.on(events.append)
        await client.connect()
        await client.start_session(transport="ws")
        samples = np.concatenate([read_wav(JFK).samples, silence(1.0)])
        await send_stream(client, numpy_stream(samples, 16000, speed=2.0))  # ~6 s: outlives three tokens
        await seen(events, lambda e: e.type == "auth.refreshed" and len([x for x in events if x.type == "auth.refreshed"]) >= 2)
        assert not [e for e in events if e.type == "auth.expired"]
        # The stop may outlast a 2 s token (an auth.refresh waits behind it): the socket is not closed meanwhile.
        ended = await client.stop_session(timeout_s=120)
        assert ended.reason == "stopped"
        assert client.stats.connects == 1 and client.stats.reconnects == 0  # never dropped
        assert len(calls) >= 3  # the connect, then one per auth.expiring
        text = " ".join(e.raw["text"] for e in events if e.type == "transcript.final")
        assert wer(JFK_TEXT, text) <= 0.15, text
        await client.close()


async def test_a_refused_refresh_ends_in_a_reconnect_with_a_fresh_token_and_a_resume(engine) -> None:
    async with serving(engine, **SHORT) as handle:
        client: ControlClient

        def provider() -> str:
            if client.connection_state is ConnectionState.CONNECTING:  # before each connect: a good token
                return handle.token("reconnector", ttl_s=2 if client.stats.connects == 0 else 3600)
            return "not-a-token"  # every refresh on the live socket fails

        client = ControlClient(handle.server.url, provider, options=options())
        events: list[Event] = []
        client.on(events.append)
        await client.connect()
        ready = await client.start_session(transport="ws")
        await seen(events, lambda e: isinstance(e, ClientNotice) and e.code == "session.resumed")
        assert [e for e in events if isinstance(e, ClientNotice) and e.code == "auth.refresh_failed"]
        assert [e for e in events if e.type == "auth.expired"]
        assert client.session_id == ready.session_id and client.stats.connects == 2
        await client.close(stop_session=True)


async def test_a_fixed_token_is_not_refreshed(control: ServerHandle) -> None:
    """A plain string has no provider: the auth.* events reach the caller, nothing is sent for them."""
    client = ControlClient(control.server.url, control.token("fixed"), options=options())
    await client.connect()
    client._on_message({"type": "auth.expiring", "expires_at": 1})
    assert client._auth_refresh is None
    await client.close()
