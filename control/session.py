"""Sessions: user → room mapping, event sequencing and replay, and the reconnect grace period.

A session outlives its control socket for `grace_period_s`; a new socket that resumes it first
receives every replayable event (everything but interims and tokens) with `seq > last_seq`.
However a session ends (stopped, replaced, grace period over, maximum length, error, shutdown),
its open utterances are finalised first, within `finish_timeout_s`, so their finals reach the
socket, the replay log and the watchers before `session.ended`.
No sockets here: a session talks to whatever `Outbox` is attached.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from agent.events import FinalTranscript, InterimTranscript, PipelineEvent
from control.commands import CommandSet
from control.media import MediaTransport, PipelineFactory, ReadyMedia, SessionMedia, SessionPipeline
from control.metrics import Metrics, SessionStats, observe_message
from control.protocol import event_message
from control.rooms import room_name
from control.schema import (
    AudioFormat,
    Forwardable,
    Numbered,
    ProtocolError,
    ServerMessage,
    SessionEnded,
    Status,
    decode_server_message,
)
from control.ws_media import WsTransport
from roomscribe.common.languages import ModelLanguages

if TYPE_CHECKING:
    from control.recording import SessionRecording
    from control.recordings import Recordings
    from control.subscriptions import Subscription

log = logging.getLogger(__name__)

#: Builds a session event for its `seq`, e.g. `lambda seq: PublishStart(seq=seq, reason="vad")`.
EventFactory = Callable[[int], Numbered]


class Outbox(Protocol):
    """Where a session's messages go: the control socket it is attached to."""

    def send_message(self, message: ServerMessage, *, droppable: bool = False, force: bool = False) -> None:
        """Queue a message; `droppable` ones may be dropped for a slow reader, `force` (replay) never is."""

    def send_bytes(self, data: bytes) -> None: ...


@dataclass
class SessionOptions:
    transport: str
    audio: AudioFormat | None
    interim: bool
    echo: bool
    multi_user: bool = False
    language: str | None = None  # None: the server's default (ROOMSCRIBE_LANGUAGE)
    task: str = "transcribe"
    record: bool = False  # record its audio and finals (control/recording.py)
    #: Decoding options as `session.start` gave them (None: the server's default).
    keyterms: list[str] | None = None
    prompt: str | None = None
    words: bool | None = None
    #: Voice commands matched on this session's finals (None: none).
    commands: CommandSet | None = None


class Session:
    """One user's transcription session: its room, pipelines, event log and attached socket."""

    def __init__(
        self,
        session_id: str,
        user: str,
        room: str,
        options: SessionOptions,
        pipeline_factory: PipelineFactory,
        replay_limit: int,
        media_transport: MediaTransport,
    ) -> None:
        self.id = session_id
        self.user = user
        self.room = room
        self.options = options
        self.created_at = time.time()
        self.seq = 0
        self.outbox: Outbox | None = None
        self.ended = False
        #: Set once ending finalised its open utterances: pipeline events after that are not sent
        #: (while its recording is finished, before `ended`).
        self.finalised = False
        #: Set once ending began (its open utterances are being finalised; no resume any more).
        self.ending: asyncio.Task[None] | None = None
        self._log: deque[Numbered] = deque(maxlen=replay_limit)
        self._evicted_upto = 0
        self._pipeline_factory = pipeline_factory
        self._pipelines: dict[str | None, SessionPipeline] = {}
        #: Monitor subscriptions watching this session.
        self.watchers: set[Subscription] = set()
        self.grace_task: asyncio.Task[None] | None = None
        #: Ends the session at the server's maximum session length (None: no maximum).
        self.limit_task: asyncio.Task[None] | None = None
        #: How the session's audio arrives (its transport's part of the session).
        self.media: SessionMedia = media_transport.session_media(self)
        #: Its recording, when it is recorded.
        self.recording: SessionRecording | None = None
        #: Events held until session.ready went out (None once it has): see `emit_when_ready`.
        self._held: list[EventFactory] | None = []
        #: What the session did (logged when it ends), and the server's metrics (set by its manager).
        self.stats = SessionStats()
        self.metrics: Metrics | None = None

    @property
    def transport(self) -> str:
        return self.options.transport

    # -- events -----------------------------------------------------------------------------
    def emit(self, event: EventFactory | dict[str, Any]) -> int:
        """Number the event, keep it for replay when it is replayed, and send it if attached.

        `event` builds the message for its `seq`; a dict (a message without `seq`, for callers not
        yet on the schema's structs) is validated through the schema.
        """
        self.seq += 1
        message = event(self.seq) if callable(event) else _numbered({**event, "seq": self.seq})
        if self.recording is not None:
            self.recording.observe(message)
        observe_message(message, self.stats, self.metrics)
        if message.replayed:
            if len(self._log) == self._log.maxlen:
                self._evicted_upto = self._log[0].seq
            self._log.append(message)
        self.deliver(message)
        return self.seq

    def emit_when_ready(self, event: EventFactory) -> None:
        """Emit an event now, or right after session.ready if that has not gone out yet."""
        if self._held is None:
            self.emit(event)
        else:
            self._held.append(event)

    def ready_sent(self) -> None:
        """session.ready went out: the events held for it follow."""
        held, self._held = self._held, None
        for event in held or ():
            self.emit(event)

    def deliver(self, message: Numbered) -> None:
        """Send a numbered event to the attached socket and the watchers (a cluster session journals
        it in Redis first: control/cluster_session.py)."""
        if self.outbox is not None:
            self.outbox.send_message(message, droppable=message.droppable)
        if isinstance(message, Forwardable):
            self._notify_watchers(message)

    def _notify_watchers(self, message: Forwardable) -> None:
        for watcher in list(self.watchers):
            watcher.deliver(self.id, self.user, message)

    def on_pipeline_event(self, event: PipelineEvent) -> None:
        if self.ended or self.finalised:
            return
        if self.metrics is not None:
            self.metrics.observe_pipeline_event(event)
        self.media.observe(event)
        if isinstance(event, InterimTranscript) and not self.options.interim:
            return
        self.emit(partial(event_message, event))
        if isinstance(event, FinalTranscript) and self.options.commands:
            for command in self.options.commands.messages(event):
                self.emit(partial(_renumbered, command))

    def count_audio(self, seconds: float) -> None:
        """Audio received for this session (its media call this as they feed the pipeline)."""
        self.stats.audio_s += seconds
        if self.metrics is not None:
            self.metrics.count_audio(self.transport, seconds)

    def send(self, message: ServerMessage, *, droppable: bool = False) -> None:
        """Send a message that is not a numbered event (replies, errors) if a socket is attached."""
        if self.outbox is not None:
            self.outbox.send_message(message, droppable=droppable)

    # -- pipelines -----------------------------------------------------------------------------
    def pipeline(self, participant: str | None = None) -> SessionPipeline:
        """The pipeline for one speaker (None: the session's single user), created on first use."""
        pipeline = self._pipelines.get(participant)
        if pipeline is None:
            pipeline = self._pipeline_factory(self.on_pipeline_event, participant, self.options)
            self._pipelines[participant] = pipeline
            if self.recording is not None:
                self.recording.tap(pipeline, participant)
        return pipeline

    async def finish_speech(self, participant: str | None = None) -> None:
        """Finalise the open utterance of one speaker's pipeline, if it has one."""
        pipeline = self._pipelines.get(participant)
        if pipeline is not None:
            await pipeline.finish()

    async def finish_all(self, timeout_s: float | None = None) -> bool:
        """Finalise every open utterance (its final events are emitted before this returns).

        False when that took longer than `timeout_s`: what was still being decoded is cancelled.
        """
        pipelines = list(self._pipelines.values())
        if not pipelines:
            return True
        try:
            await asyncio.wait_for(asyncio.gather(*(p.finish() for p in pipelines)), timeout_s)
        except TimeoutError:
            return False
        return True

    async def close_pipelines(self) -> None:
        pipelines = list(self._pipelines.values())
        self._pipelines.clear()
        await asyncio.gather(*(p.aclose() for p in pipelines), return_exceptions=True)

    # -- attachment ------------------------------------------------------------------------------
    def attach(self, outbox: Outbox) -> None:
        """Attach a socket and stop the grace timer."""
        self.outbox = outbox
        if self.grace_task is not None:
            self.grace_task.cancel()
            self.grace_task = None

    def replay(self, outbox: Outbox, last_seq: int) -> int:
        """Send every logged event after `last_seq`, in order; returns how many."""
        if last_seq < self._evicted_upto:
            outbox.send_message(
                Status(
                    code="replay.truncated",
                    message=f"events up to seq {self._evicted_upto} are older than the replay buffer keeps",
                ),
                force=True,
            )
        missed = [m for m in self._log if m.seq > last_seq]
        for message in missed:
            outbox.send_message(message, force=True)
        return len(missed)

    def detach(self, outbox: Outbox) -> bool:
        """Detach `outbox` if it is the attached one; True when the session is now unattended."""
        if self.outbox is outbox:
            self.outbox = None
            return True
        return False


def _report_recording_error(session: Session, code: str, message: str) -> None:
    """A session's recording failed: tell its client (after session.ready), unless it is over."""
    if not session.ended:
        session.emit_when_ready(lambda seq: Status(seq=seq, code=code, message=message))
def _renumbered(message: Numbered, seq: int) -> Numbered:
    """`message` numbered `seq` (it was made with seq 0)."""
    return msgspec.structs.replace(message, seq=seq)


def _numbered(data: dict[str, Any]) -> Numbered:
    """A numbered event given as a dict, checked against the schema (undeclared fields included)."""
    try:
        message = decode_server_message(data, exact=True)
    except msgspec.ValidationError as error:
        raise TypeError(f"not a valid session event: {error}") from None
    if not isinstance(message, Numbered):
        raise TypeError(f"{message.type} is not a numbered session event")
    return message


class SessionManager:
    """Owns every session: one per user, looked up by id for resume, ended after the grace period."""

    def __init__(
        self,
        *,
        pipeline_factory: PipelineFactory,
        grace_period_s: float,
        room_strategy: str = "user",
        room_prefix: str = "roomscribe-",
        replay_limit: int = 2000,
        transports: Mapping[str, MediaTransport] | None = None,
        finish_timeout_s: float = 60.0,
        max_session_s: float = 0.0,
        recordings: Recordings | None = None,
        languages: ModelLanguages | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """`transports` by name (the schema's `Transport`); without it, only ws with its defaults.
        A session is stopped (`max_duration`) after `max_session_s` (0: never). Sessions with
        `record` are recorded in `recordings` (None: this server records nothing). `languages`: what
        the model can do (None: not checked here; a cluster's workers check)."""
        self._pipeline_factory = pipeline_factory
        self.languages = languages
        self.grace_period_s = grace_period_s
        self.finish_timeout_s = finish_timeout_s
        self.room_strategy = room_strategy
        self.room_prefix = room_prefix
        self.replay_limit = replay_limit
        self.max_session_s = max_session_s
        self.recordings = recordings
        self.transports: dict[str, MediaTransport] = dict(transports) if transports is not None else {"ws": WsTransport()}
        self.sessions: dict[str, Session] = {}
        self._by_user: dict[str, Session] = {}
        self._subscriptions: dict[str, Subscription] = {}
        self.metrics = metrics or Metrics()

    def for_user(self, user: str) -> Session | None:
        return self._by_user.get(user)

    def transport(self, name: str) -> MediaTransport:
        """The transport called `name`; ProtocolError when this server does not offer it."""
        media_transport = self.transports.get(name)
        if media_transport is None:
            # ws is always offered: only LiveKit can be missing.
            raise ProtocolError("transport.unavailable", "the LiveKit transport is not enabled on this server")
        return media_transport

    async def start(
        self, user: str, options: SessionOptions, outbox: Outbox, room: str | None = None
    ) -> Session:
        """A new session for `user` (its media not yet open: see `open_media`); an existing one of
        the same user is ended as 'replaced'."""
        self.transport(options.transport)  # ProtocolError when this server does not offer it
        # Ending waits for the open utterance's final: another start of the same user may have
        # registered its session meanwhile, and is replaced in turn.
        while (previous := self._by_user.get(user)) is not None:
            await self.end(previous, "replaced")
        session = await self.new_session(
            "s_" + secrets.token_urlsafe(12), user, room or room_name(self.room_strategy, self.room_prefix, user), options
        )
        if options.record and self.recordings is not None:
            session.recording = await self.recordings.open(
                session.id,
                user=user,
                room=session.room,
                transport=options.transport,
                multi_user=options.multi_user,
                on_error=partial(_report_recording_error, session),
            )
        while (previous := self._by_user.get(user)) is not None:  # registered while this one was made
            await self.end(previous, "replaced")
        self.sessions[session.id] = session
        self._by_user[user] = session
        session.watchers.update(s for s in self._subscriptions.values() if s.user == user)
        session.attach(outbox)
        if self.max_session_s > 0:
            session.limit_task = asyncio.get_running_loop().create_task(self._limit(session))
        return session

    async def new_session(self, session_id: str, user: str, room: str, options: SessionOptions) -> Session:
        """Make a new session (not yet registered here); a cluster manager also registers it in Redis."""
        session = Session(
            session_id=session_id,
            user=user,
            room=room,
            options=options,
            pipeline_factory=self._pipeline_factory,
            replay_limit=self.replay_limit,
            media_transport=self.transport(options.transport),
        )
        session.metrics = self.metrics
        return session

    async def fetch(self, session_id: str, user: str) -> None:
        """Before `user` resumes a session: make sure it is here if it exists (a cluster manager
        loads it from Redis; in one process every session is here already)."""

    async def health(self) -> dict[str, Any]:
        """What /healthz adds about the state this manager depends on (a cluster's Redis and workers)."""
        return {}

    async def open_media(self, session: Session) -> ReadyMedia:
        """Open a new session's media; what session.ready announces. If it fails the session ends."""
        try:
            ready = await session.media.open()
        except Exception:
            await self.end(session, "error", notify=False)
            raise
        self.metrics.sessions_started.labels(session.transport).inc()
        log.info(
            "session %s started for user %r (transport %s, room %r)", session.id, session.user, session.transport, session.room
        )
        return ready

    def resume(self, user: str, session_id: str, last_seq: int, outbox: Outbox) -> Session:
        """Reattach a socket to a live session; the caller then replays what it missed."""
        session = self.sessions.get(session_id)
        if session is None or session.ending is not None or session.user != user:
            raise ProtocolError("session.not_found", "that session does not exist or its grace period is over; start a new one")
        if last_seq > session.seq:
            raise ProtocolError("bad_request", f"'resume.last_seq' {last_seq} is ahead of the session ({session.seq})")
        if session.outbox is not None and session.outbox is not outbox:
            old = session.outbox
            session.detach(old)
            old.send_message(SessionEnded(session_id=session.id, reason="resumed_elsewhere"))
        session.attach(outbox)
        log.info("session %s resumed after seq %d (now at %d)", session.id, last_seq, session.seq)
        return session

    def detach(self, session: Session, outbox: Outbox) -> None:
        """The socket went away: keep the session for the grace period, then end it."""
        if session.ending is not None or not session.detach(outbox):
            return
        log.info("session %s detached; kept for %.0f s", session.id, self.grace_period_s)
        session.grace_task = asyncio.get_running_loop().create_task(self._expire(session))

    async def _expire(self, session: Session) -> None:
        await asyncio.sleep(self.grace_period_s)
        session.grace_task = None
        log.info("session %s: grace period over", session.id)
        await self.end(session, "grace_expired", notify=False)

    async def _limit(self, session: Session) -> None:
        await asyncio.sleep(self.max_session_s)
        session.limit_task = None
        log.info("session %s: maximum session length (%.0f s) reached", session.id, self.max_session_s)
        await self.stop(session, "max_duration")

    async def stop(self, session: Session, reason: str = "stopped") -> None:
        """End the session (its open utterances are finalised first, as for every reason)."""
        await self.end(session, reason)

    async def end(self, session: Session, reason: str, *, notify: bool = True) -> None:
        """End a session: finalise its open utterances (at most `finish_timeout_s`; their finals go
        out first), then send `session.ended` and release its media and pipelines. A second call
        (another reason) waits for the first to finish."""
        if session.ending is None:  # its own task: a caller that is cancelled never leaves it half ended
            session.ending = asyncio.get_running_loop().create_task(self._end(session, reason, notify))
        await asyncio.shield(session.ending)

    async def _end(self, session: Session, reason: str, notify: bool) -> None:
        for timer in (session.grace_task, session.limit_task):
            if timer is not None:
                timer.cancel()
        session.grace_task = session.limit_task = None
        try:
            if not await session.finish_all(self.finish_timeout_s):
                log.warning(
                    "session %s (%s): open utterances not finalised within %.1f s; ending anyway",
                    session.id, reason, self.finish_timeout_s,
                )
        except Exception:
            log.exception("session %s (%s): finalising open utterances failed", session.id, reason)
        session.finalised = True
        if session.recording is not None and self.recordings is not None:
            summary = await self.recordings.finish(session.recording, reason)
            if summary is not None and reason != "error":  # "error": the session never started
                session.emit(summary.message)
        session.ended = True
        ended = SessionEnded(session_id=session.id, reason=reason)
        if notify:
            session.send(ended)
        session._notify_watchers(ended)
        for watcher in session.watchers:
            if watcher.session_id == session.id:
                self._subscriptions.pop(watcher.id, None)
        session.watchers.clear()
        self.sessions.pop(session.id, None)
        if self._by_user.get(session.user) is session:
            del self._by_user[session.user]
        try:
            await session.media.close()
        except Exception:
            log.exception("session %s: closing media failed", session.id)
        await session.close_pipelines()
        log.info(
            "session %s ended (%s): %s", session.id, reason, session.stats.summary(),
            extra={"stats": {"reason": reason, **session.stats.fields()}},
        )

    # -- monitor subscriptions ----------------------------------------------------------------
    async def owner_of(self, session_id: str) -> str | None:
        """The user whose live session `session_id` is (None: there is none)."""
        session = self.sessions.get(session_id)
        return session.user if session is not None and not session.ended else None

    async def subscribe(self, subscription: Subscription) -> Session | None:
        """Register a subscription; returns the session it watches now, if any."""
        if subscription.session_id is not None:
            session = self.sessions.get(subscription.session_id)
            if session is None or session.ended:
                raise ProtocolError("session.not_found", "no live session with that id")
        else:
            session = self._by_user.get(subscription.user or "")
        self._subscriptions[subscription.id] = subscription
        if session is not None:
            session.watchers.add(subscription)
        return session

    def unsubscribe(self, subscription_id: str, outbox: Outbox) -> bool:
        """Remove a subscription that belongs to `outbox`; False when there is none."""
        subscription = self._subscriptions.get(subscription_id)
        if subscription is None or subscription.outbox is not outbox:
            return False
        del self._subscriptions[subscription_id]
        for session in self.sessions.values():
            session.watchers.discard(subscription)
        return True

    def subscriptions_of(self, outbox: Outbox) -> list[Subscription]:
        """The subscriptions a socket holds."""
        return [s for s in self._subscriptions.values() if s.outbox is outbox]

    def drop_subscriptions(self, outbox: Outbox) -> None:
        """Forget every subscription of a socket that went away."""
        for subscription in self.subscriptions_of(outbox):
            self.unsubscribe(subscription.id, outbox)

    async def close(self) -> None:
        """End every session (server shutdown), all at once: each finalises its open utterances first."""
        await asyncio.gather(*(self.end(session, "server_shutdown") for session in list(self.sessions.values())))
