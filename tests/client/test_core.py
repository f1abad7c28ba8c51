"""The client's sans-I/O core without a socket: resume position, dedup of replays, request matching
(a reply that fails validation included) and subscription bookkeeping."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from control.schema import (
    SUBSCRIBABLE,
    AudioFormat,
    AuthRefresh,
    Ping,
    Request,
    Resume,
    SessionStart,
    Subscribe,
    TokenRefresh,
    Unsubscribe,
)
from roomscribe.client.core import ClientCore
from roomscribe.client.errors import ClientError, ServerError
from roomscribe.client.events import Event, FinalTranscript, SessionReady, Subscribed, Unknown
from roomscribe.client.options import SessionState

pytestmark = pytest.mark.timeout(10)

READY: dict[str, Any] = {"type": "session.ready", "session_id": "s_1", "transport": "ws", "protocol": 1, "room": "r",
                         "resumed": False, "last_seq": 0}
FINAL: dict[str, Any] = {"type": "transcript.final", "utterance_id": "u", "text": "x", "start": 0, "end": 1,
                         "reason": "silence"}
START = SessionStart(transport="ws", audio=AudioFormat())


def started(core: ClientCore) -> None:
    """A core whose session s_1 is active."""
    core.begin_session(START)
    assert core.receive(READY).deliver
    core.session_started()


def state(core: ClientCore) -> SessionState:
    """The core's session state (read through a call: mypy would keep an earlier check's narrowing)."""
    return core.session_state


def future() -> asyncio.Future[Event]:
    return asyncio.get_running_loop().create_future()


def id_of(request: Request) -> str:
    """The id `begin_request` gave a request (the client's ids are strings)."""
    assert isinstance(request.id, str)
    return request.id


async def test_a_session_start_and_its_ready_reply() -> None:
    core = ClientCore()
    core.begin_session(START)
    assert state(core) is SessionState.STARTING
    with pytest.raises(ClientError, match="already starting"):
        core.begin_session(START)
    reply = future()
    wire = core.begin_request(START, reply)
    assert wire == msgspec.structs.replace(START, id=id_of(wire)) and START.id is None  # a copy with an id
    assert id_of(wire) in core.pending and core.slow_requests == 1
    incoming = core.receive({**READY, "id": id_of(wire)})
    assert incoming.deliver and isinstance(reply.result(), SessionReady) and core.session_id == "s_1"
    core.end_request(id_of(wire))
    assert not core.pending and core.slow_requests == 0
    core.session_started()
    assert state(core) is SessionState.ACTIVE and core.live


def test_replayed_events_are_dropped_by_seq() -> None:
    core = ClientCore()
    started(core)
    fresh = [core.receive({**FINAL, "seq": seq}) for seq in (1, 2, 3, 2, 3, 4)]  # 2 and 3 replayed
    assert [i.deliver for i in fresh] == [True, True, True, False, False, True]
    assert [i.duplicate for i in fresh] == [False, False, False, True, True, False]
    assert core.last_seq == 4
    # Forwarded events (a monitor subscription) are numbered per watched session, independently.
    watched = {**FINAL, "subscription_id": "sub_1", "session_id": "s_9", "user": "bob"}
    assert [core.receive({**watched, "seq": s}).duplicate for s in (1, 1, 2)] == [False, True, False]
    assert core.last_seq == 4
    # Events without seq (pongs, replies) are never duplicates.
    assert not core.receive({"type": "pong", "id": "cp1", "time": 1.0}).duplicate


def test_resume_asks_from_last_seq_and_keeps_numbering() -> None:
    core = ClientCore()
    started(core)
    for seq in (1, 2, 3):
        core.receive({**FINAL, "seq": seq})
    assert core.needs_resume
    assert core.resume_request() == SessionStart(resume=Resume(session_id="s_1", last_seq=3))
    assert state(core) is SessionState.RESUMING and core.live
    ready = core.receive({**READY, "resumed": True, "last_seq": 5, "audio_bytes_received": 6400})
    assert core.last_seq == 3, "a resumed session keeps its numbering: the replay after it is deduplicated"
    assert core.resume_done(ready.event) == (SessionState.ACTIVE, 6400)
    assert state(core) is SessionState.ACTIVE
    assert [core.receive({**FINAL, "seq": s}).deliver for s in (3, 4, 5)] == [False, True, True]
    # A new (not resumed) session numbers from 1 again.
    core.receive({**READY, "session_id": "s_2"})
    assert core.session_id == "s_2" and core.receive({**FINAL, "seq": 1}).deliver


def test_a_refused_resume_restores_the_state_it_came_from() -> None:
    core = ClientCore()
    started(core)
    assert core.stopping() and not core.stopping()  # only an active session sends its stop
    core.resume_request()
    assert core.resume_done() == (SessionState.STOPPING, None)
    assert state(core) is SessionState.STOPPING


def test_session_ended_ends_only_this_session() -> None:
    core = ClientCore()
    started(core)
    other = core.receive({"type": "session.ended", "session_id": "s_other", "reason": "stopped"})
    assert other.ended is None and state(core) is SessionState.ACTIVE
    mine = core.receive({"type": "session.ended", "session_id": "s_1", "reason": "stopped"})
    assert mine.ended is not None and mine.ended.reason == "stopped" and mine.deliver
    assert state(core) is SessionState.ENDED and not core.live
    core.begin_session(START)  # a new session may start after the end
    assert state(core) is SessionState.STARTING


async def test_replies_settle_their_requests_by_id() -> None:
    core = ClientCore()
    ping, other = future(), future()
    ping_wire = core.begin_request(Ping(), ping)
    other_wire = core.begin_request(Ping(), other)
    assert id_of(ping_wire) != id_of(other_wire) and core.slow_requests == 0
    pong = core.receive({"type": "pong", "id": id_of(ping_wire), "time": 1.0})
    assert pong.pong_id == id_of(ping_wire) and not pong.deliver  # pongs are not events for the caller
    assert ping.done() and not other.done()
    unrequested = core.receive({"type": "pong", "id": "nobody", "time": 1.0})
    assert unrequested.pong_id == "nobody" and not other.done()


async def test_an_error_reply_fails_its_request_and_is_not_delivered() -> None:
    core = ClientCore()
    reply = future()
    wire = core.begin_request(Subscribe(user="bob"), reply)
    incoming = core.receive({"type": "error", "id": id_of(wire), "code": "not_allowed", "message": "no monitor claim"})
    assert not incoming.deliver
    with pytest.raises(ServerError) as raised:
        reply.result()
    assert raised.value.code == "not_allowed"


async def test_a_reply_that_fails_validation_fails_its_request() -> None:
    core = ClientCore()
    reply = future()
    wire = core.begin_request(Subscribe(user="bob"), reply)
    incoming = core.receive({"type": "subscribed", "id": id_of(wire), "subscription_id": "sub_1"})  # fields missing
    assert isinstance(incoming.event, Unknown) and incoming.event.error is not None and not incoming.deliver
    with pytest.raises(ClientError, match="does not fit"):
        reply.result()
    # Unrequested, the same kind of message is delivered as Unknown.
    stray = core.receive({"type": "speech.start", "seq": 1})
    assert isinstance(stray.event, Unknown) and stray.deliver


async def test_pending_requests_fail_together() -> None:
    core = ClientCore()
    replies = [future(), future()]
    for reply in replies:
        core.begin_request(TokenRefresh(), reply)
    assert core.slow_requests == 2
    core.fail_pending(ClientError("dropped"))
    assert not core.pending and all(isinstance(r.exception(), ClientError) for r in replies)


def test_subscriptions_are_kept_renewed_and_dropped() -> None:
    core = ClientCore()
    with pytest.raises(ValueError):
        core.subscribe_request()
    assert sorted(core.subscribe_request(user="bob").events) == sorted(SUBSCRIBABLE)  # default: every event
    request = core.subscribe_request(session_id="s_9", events=["transcript.final"])
    assert request == Subscribe(session_id="s_9", events=["transcript.final"])
    granted = core.receive({"type": "subscribed", "subscription_id": "sub_1", "session_id": "s_9", "user": None,
                            "events": ["transcript.final"]}).event
    subscription = core.subscribed(request, granted)
    assert core.subscriptions == {"sub_1": subscription}
    # After a reconnect the same request is sent again and the subscription takes the new id.
    core.renewing(subscription)
    assert not core.subscriptions
    again = Subscribed(subscription_id="sub_2", session_id="s_9", user=None, events=["transcript.final"])
    assert core.renewed(subscription, again) == "sub_1" and subscription.id == "sub_2"
    assert core.subscriptions == {"sub_2": subscription}
    # The watched session ends: the subscription is gone (a user subscription would stay).
    ended = core.receive({"type": "session.ended", "session_id": "s_9", "reason": "stopped", "subscription_id": "sub_2"})
    assert ended.deliver and ended.ended is None and not core.subscriptions
    assert core.unsubscribed(subscription) == Unsubscribe(subscription_id="sub_2")


def test_a_final_is_typed() -> None:
    core = ClientCore()
    started(core)
    assert isinstance(core.receive({**FINAL, "seq": 1}).event, FinalTranscript)


def test_auth_notices_ask_the_shell_for_a_fresh_token() -> None:
    core = ClientCore()
    for raw in ({"type": "auth.expiring", "expires_at": 5}, {"type": "auth.expired", "expires_at": 5, "close_in_s": 1.0}):
        incoming = core.receive(raw)
        assert incoming.refresh_auth and incoming.deliver and incoming.event.type == raw["type"]
    assert not core.receive({"type": "pong", "time": 1.0}).refresh_auth
    assert core.auth_refresh_request("tok") == AuthRefresh(token="tok")
