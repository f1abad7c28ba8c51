"""Monitor subscriptions from ControlClient: allowed watchers see another session's finals, others are refused."""

from __future__ import annotations

import asyncio

import pytest

from roomscribe.client.control_client import ControlClient
from roomscribe.client.errors import ServerError
from roomscribe.client.events import Event
from roomscribe.client.sources import wav_stream
from roomscribe.client.stream import send_stream
from speech_samples import LIBRI, LIBRI_TEXT, wer

pytestmark = pytest.mark.timeout(90)


async def speak(client: ControlClient) -> None:
    """Stream LIBRI at 8× through `client`'s ws session and stop it."""
    stream = wav_stream(LIBRI, speed=8.0, tail_silence_s=1.0)
    await send_stream(client, stream)
    await client.stop_session(timeout_s=60)


async def test_monitor_sees_finals_of_a_session_it_may_watch(control) -> None:
    speaker = ControlClient(control.server.url, control.token("alice"))
    monitor = ControlClient(control.server.url, control.token("ops", permissions=("monitor",)))
    same_user = ControlClient(control.server.url, control.token("alice"))
    seen: dict[str, list[Event]] = {"monitor": [], "same_user": []}
    monitor.on(seen["monitor"].append)
    same_user.on(seen["same_user"].append)
    for client in (speaker, monitor, same_user):
        await client.connect()
    ready = await speaker.start_session(transport="ws")
    by_session = await monitor.subscribe(session_id=ready.session_id, events=["transcript.final", "session.ended"])
    by_user = await same_user.subscribe(user="alice")  # one's own sessions need no claim
    assert by_session.reply.session_id == ready.session_id and by_user.reply.user == "alice"

    await speak(speaker)
    for name, events in seen.items():
        for _ in range(100):
            if any(e.type == "session.ended" for e in events):
                break
            await asyncio.sleep(0.05)
        finals = [e for e in events if e.type == "transcript.final"]
        assert finals, f"{name} saw no final"
        assert wer(LIBRI_TEXT, " ".join(f.raw["text"] for f in finals)) <= 0.10
        assert all(f.raw["session_id"] == ready.session_id and f.raw["user"] == "alice" for f in finals)
    assert {e.subscription_id for e in seen["monitor"] if e.seq} == {by_session.id}
    subscribed = {e.type for e in seen["monitor"] if e.subscription_id and e.type != "subscribed"}
    assert subscribed == {"transcript.final", "session.ended"}
    assert "speech.start" in {e.type for e in seen["same_user"]}  # no filter: every event type
    for client in (speaker, monitor, same_user):
        await client.close()


async def test_watching_someone_elses_session_without_the_claim_is_refused(control) -> None:
    speaker = ControlClient(control.server.url, control.token("alice"))
    stranger = ControlClient(control.server.url, control.token("mallory"))
    await speaker.connect()
    await stranger.connect()
    ready = await speaker.start_session(transport="ws")
    with pytest.raises(ServerError) as refused:
        await stranger.subscribe(session_id=ready.session_id)
    assert refused.value.code == "not_allowed"
    with pytest.raises(ServerError) as refused_user:
        await stranger.subscribe(user="alice")
    assert refused_user.value.code == "not_allowed"
    with pytest.raises(ServerError) as unknown:  # the same answer whether or not the session exists
        await stranger.subscribe(session_id="s_does_not_exist")
    assert unknown.value.code == "not_allowed"
    for client in (speaker, stranger):
        await client.close()


async def test_subscription_is_renewed_after_the_monitor_reconnects(control, proxy) -> None:
    from roomscribe.client.options import ClientOptions
    from roomscribe.common.backoff import Backoff

    speaker = ControlClient(control.server.url, control.token("alice"))
    monitor = ControlClient(proxy.url(), control.token("ops", permissions=("monitor",)),
                            options=ClientOptions(backoff=Backoff(base_s=0.05, cap_s=0.2)))
    events: list[Event] = []
    monitor.on(events.append)
    await speaker.connect()
    await monitor.connect()
    subscription = await monitor.subscribe(user="alice", events=["transcript.final"])
    first_id = subscription.id
    proxy.cut()
    for _ in range(100):
        if subscription.id != first_id:
            break
        await asyncio.sleep(0.05)
    assert subscription.id != first_id, "the subscription was not renewed"
    await speaker.start_session(transport="ws")  # a session the user starts later is watched too
    await speak(speaker)
    for _ in range(100):
        if any(e.type == "transcript.final" for e in events):
            break
        await asyncio.sleep(0.05)
    finals = [e for e in events if e.type == "transcript.final"]
    assert finals and {f.subscription_id for f in finals} == {subscription.id}
    for client in (speaker, monitor):
        await client.close()
