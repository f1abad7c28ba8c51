"""The sans-I/O core of `ControlClient`: what the client knows, fed with decoded messages.

`ClientCore` holds the session's state and resume position (`session_id`, `last_seq`; the audio
byte count the server reports on a resume), drops events already delivered (by `seq`, per session
and per watched session), matches replies to the requests waiting for them (request id → future),
and keeps the monitor subscriptions to renew after a reconnect. It never touches a socket, a timer
or a task: `receive()` takes a decoded message and returns what the shell must do with it
(`Incoming`), and the request builders return the wire schema's request structs to send
(control/schema.py). `ControlClient` is the I/O shell around it (connect, reconnect supervisor,
heartbeat, audio writer).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

from control.schema import (
    AuthExpired,
    AuthExpiring,
    AuthRefresh,
    Error,
    Forwardable,
    Pong,
    Request,
    Resume,
    SessionStart,
    Subscribe,
    Unsubscribe,
)
from roomscribe.client.errors import ClientError, ServerError
from roomscribe.client.events import Event, SessionEnded, SessionReady, Subscribed, Unknown, parse_event
from roomscribe.client.options import SessionState

#: Session states in which a session exists on the server (and is resumed after a drop).
LIVE = (SessionState.ACTIVE, SessionState.STOPPING, SessionState.RESUMING)
RequestT = TypeVar("RequestT", bound=Request)


@dataclass
class Subscription:
    """A monitor subscription; `id` changes when it is renewed after a reconnect."""

    request: Subscribe
    id: str
    reply: Subscribed = field(repr=False)


@dataclass
class Incoming:
    """What `ClientCore.receive` made of one message, for the shell to act on."""

    event: Event
    #: Hand the event to the caller's callbacks and iterators (not pongs, replies that failed, duplicates).
    deliver: bool
    #: An event already delivered (a replay after a resume): dropped.
    duplicate: bool = False
    #: The id of a `pong` (it confirms the ws audio written before its ping).
    pong_id: str | None = None
    #: This client's session ended with this message (`session_state` is now ENDED).
    ended: SessionEnded | None = None
    #: The control token expires soon or has expired: send `auth_refresh_request(fresh token)`.
    refresh_auth: bool = False


class ClientCore:
    """Session state, resume position, dedup, request matching and subscriptions; no I/O."""

    def __init__(self) -> None:
        self.session_state = SessionState.NONE
        self.session: SessionReady | None = None
        self.session_id: str | None = None
        #: The highest `seq` of this session's events delivered to the caller.
        self.last_seq = 0
        #: The `session.start` that began the session (sent again if a resume is refused).
        self.start_request: SessionStart | None = None
        #: Requests waiting for their reply, by id.
        self.pending: dict[str, asyncio.Future[Event]] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self._slow: set[str] = set()
        self._resuming_from = SessionState.NONE
        self._forwarded_seq: dict[str, int] = {}
        self._ids = itertools.count(1)

    # -- ids and requests ----------------------------------------------------------------------------
    def new_id(self, kind: str) -> str:
        return f"c{kind}{next(self._ids)}"

    def begin_request(self, request: RequestT, reply: asyncio.Future[Event]) -> RequestT:
        """A copy of `request` with a fresh id whose reply settles `reply`: the request to send."""
        request_id = self.new_id(request.type.split(".")[-1])
        self.pending[request_id] = reply
        if request.slow:  # answered after slow work; the server reads a socket's requests in turn, so pings wait
            self._slow.add(request_id)
        return msgspec.structs.replace(request, id=request_id)

    def end_request(self, request_id: str) -> None:
        """The caller stopped waiting (answered, timed out or cancelled)."""
        self.pending.pop(request_id, None)
        self._slow.discard(request_id)

    @property
    def slow_requests(self) -> int:
        """Slow requests outstanding: the server answers pings only after them."""
        return len(self._slow)

    def fail_pending(self, error: BaseException) -> None:
        """Every waiting request fails with `error` (the link dropped, or the client gave up)."""
        for future in self.pending.values():
            if not future.done():
                future.set_exception(error)
        self.pending.clear()

    # -- session -------------------------------------------------------------------------------------
    @property
    def live(self) -> bool:
        """A session exists on the server (it is resumed after a drop)."""
        return self.session_state in LIVE

    def begin_session(self, request: SessionStart) -> None:
        """`request` (a session.start) is about to be sent; raises if a session is under way."""
        if self.session_state not in (SessionState.NONE, SessionState.ENDED):
            raise ClientError(f"a session is already {self.session_state.value}")
        self.start_request = request
        self.session_state = SessionState.STARTING

    def session_started(self) -> None:
        self.session_state = SessionState.ACTIVE

    def session_refused(self) -> None:
        self.session_state = SessionState.NONE

    def stopping(self) -> bool:
        """The caller stops an active session: True when a session.stop must be sent now."""
        if self.session_state is SessionState.ACTIVE:
            self.session_state = SessionState.STOPPING
            return True
        return False

    @property
    def needs_resume(self) -> bool:
        return self.live and self.session_id is not None

    def resume_request(self) -> SessionStart:
        """The session.start that resumes the session after `last_seq`; the session is RESUMING until
        `resume_done` (its previous state comes back whatever the outcome)."""
        assert self.start_request is not None and self.session_id is not None
        self._resuming_from = self.session_state
        self.session_state = SessionState.RESUMING
        return SessionStart(resume=Resume(session_id=self.session_id, last_seq=self.last_seq))

    def resume_done(self, ready: Event | None = None) -> tuple[SessionState, int | None]:
        """The resume was answered (`ready`) or failed (None): the state before it, and the number of
        audio bytes the server had read (the ws audio to skip when sending again)."""
        self.session_state = self._resuming_from
        received = ready.audio_bytes_received if isinstance(ready, SessionReady) else None
        return self._resuming_from, received

    def restarted(self) -> None:
        """A new session (from `start_request`) replaced one that could not be resumed."""
        self.session_state = SessionState.ACTIVE

    def end_session(self, ended: SessionEnded) -> bool:
        """The session ended (or was lost); False when `ended` is about another session."""
        if self.session_id is not None and ended.session_id and ended.session_id != self.session_id:
            return False
        self.session_state = SessionState.ENDED
        return True

    # -- control token ---------------------------------------------------------------------------------
    @staticmethod
    def auth_refresh_request(token: str) -> AuthRefresh:
        """The request that hands the socket a fresh control token (answered by `auth.refreshed`)."""
        return AuthRefresh(token=token)

    # -- subscriptions ---------------------------------------------------------------------------------
    @staticmethod
    def subscribe_request(
        session_id: str | None = None, user: str | None = None, events: Iterable[str] | None = None
    ) -> Subscribe:
        """Watch one session or every session of one user (`events`: default all)."""
        if (session_id is None) == (user is None):
            raise ValueError("subscribe needs exactly one of session_id or user")
        if events is None:
            return Subscribe(session_id=session_id, user=user)
        return Subscribe(session_id=session_id, user=user, events=list(events))

    def subscribed(self, request: Subscribe, reply: Event) -> Subscription:
        assert isinstance(reply, Subscribed)
        subscription = Subscription(request, reply.subscription_id, reply)
        self.subscriptions[reply.subscription_id] = subscription
        return subscription

    def unsubscribed(self, subscription: Subscription) -> Unsubscribe:
        """Forget `subscription`; returns the unsubscribe request to send."""
        self.subscriptions.pop(subscription.id, None)
        return Unsubscribe(subscription_id=subscription.id)

    def renewing(self, subscription: Subscription) -> None:
        """`subscription` is asked for again on a new link: forgotten until `renewed`."""
        self.subscriptions.pop(subscription.id, None)

    def renewed(self, subscription: Subscription, reply: Event) -> str:
        """The server granted `subscription` again under a new id; returns the old id."""
        assert isinstance(reply, Subscribed)
        old_id, subscription.id, subscription.reply = subscription.id, reply.subscription_id, reply
        self.subscriptions[subscription.id] = subscription
        return old_id

    # -- incoming messages ---------------------------------------------------------------------------
    def receive(self, raw: dict[str, Any]) -> Incoming:
        """Take one decoded server message: update the state, settle its request, say what to do."""
        event = parse_event(raw)
        request = self.pending.get(str(raw.get("id"))) if raw.get("id") is not None else None
        pong_id = str(raw.get("id")) if isinstance(event, Pong) else None
        if not self.is_new(event):
            return Incoming(event, deliver=False, duplicate=True, pong_id=pong_id)
        ended: SessionEnded | None = None
        if isinstance(event, SessionReady):
            self.adopt(event)
        elif isinstance(event, SessionEnded) and event.subscription_id is None:
            ended = event if self.end_session(event) else None
        elif (
            isinstance(event, SessionEnded)
            and event.subscription_id in self.subscriptions
            and self.subscriptions[event.subscription_id].request.session_id is not None
        ):
            del self.subscriptions[event.subscription_id]  # the watched session is over
        if isinstance(event, (AuthExpiring, AuthExpired)):
            return Incoming(event, deliver=True, refresh_auth=True)
        if request is not None and not request.done():
            if isinstance(event, Error):
                request.set_exception(ServerError(event.code, event.message, raw))
                return Incoming(event, deliver=False, pong_id=pong_id, ended=ended)  # the caller gets the exception
            if isinstance(event, Unknown) and event.error is not None:
                request.set_exception(ClientError(f"the server's reply does not fit the protocol: {event.error}"))
                return Incoming(event, deliver=False, pong_id=pong_id, ended=ended)
            request.set_result(event)
        return Incoming(event, deliver=not isinstance(event, Pong), pong_id=pong_id, ended=ended)

    def is_new(self, event: Event) -> bool:
        """False for an event already delivered (by `seq`: per session, and per watched session)."""
        seq = event.seq
        if seq is None:
            return True
        if isinstance(event, Forwardable) and event.subscription_id is not None:
            key = str(event.session_id)
            if seq <= self._forwarded_seq.get(key, 0):
                return False
            self._forwarded_seq[key] = seq
            return True
        if seq <= self.last_seq:
            return False
        self.last_seq = seq
        return True

    def adopt(self, ready: SessionReady) -> None:
        """A session.ready: a new session starts numbering at 1 again; a resumed one keeps `last_seq`."""
        if not ready.resumed:
            self.last_seq = 0
        self.session = ready
        self.session_id = ready.session_id
