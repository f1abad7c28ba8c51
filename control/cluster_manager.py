"""The session manager of a control replica in a cluster (`roomscribe control`).

Sessions are registered in Redis and run on workers (control/cluster_session.py). Any replica can
resume any session: `fetch` loads it from Redis and takes it over. A replica that shuts down ends
no session: it lets go of them, and their clients resume on another replica (or on this one after a
restart) within the grace period. While Redis cannot be reached, new sessions are refused with
`cluster.unavailable`; sessions already running hold their audio and events until it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Mapping
from typing import Any

from redis.exceptions import RedisError

from control.cluster_session import ClusterSession, cluster_unavailable
from control.cluster_store import ClusterStore
from control.cluster_watch import WatchRelay
from control.dispatch import alive
from control.media import MediaTransport, ReadyMedia
from control.schema import ProtocolError, ReplaceIn, SessionRecord
from control.session import Outbox, Session, SessionManager, SessionOptions
from control.subscriptions import Subscription
from control.ws_media import WsSessionMedia
from roomscribe.common.tasks import BackgroundTasks

log = logging.getLogger(__name__)

#: How often a new session checks whether the replica holding the user's previous one has ended it.
REPLACE_POLL_S = 0.1


def _no_local_pipelines(*_: object) -> Any:
    raise AssertionError("a control replica runs no pipelines: its sessions' pipelines are on workers")


class ClusterSessionManager(SessionManager):
    """Sessions in Redis, transcription on workers; this replica holds sockets and numbers events."""

    def __init__(
        self,
        store: ClusterStore,
        *,
        replica_id: str | None = None,
        grace_period_s: float,
        transports: Mapping[str, MediaTransport],
        **options: Any,
    ) -> None:
        super().__init__(pipeline_factory=_no_local_pipelines, grace_period_s=grace_period_s, transports=transports, **options)
        self.store = store
        self.replica_id = replica_id or "control-" + secrets.token_hex(4)
        #: Redis keeps a session this long after the last sign of life from its replica.
        self.ttl_s = max(grace_period_s, 5.0)
        self._keeper: asyncio.Task[None] | None = None
        self._tasks = BackgroundTasks(log, "cluster session task")
        self._watch = WatchRelay(store, lambda: self._subscriptions.values(), self._drop_subscription)

    async def start_keeper(self) -> None:
        """Keep this replica's sessions alive in Redis (they expire a grace period after it dies),
        and the replica's own mark (gone `ttl_s` after it dies: others then take its sessions over)."""
        with contextlib.suppress(RedisError, OSError):  # the keeper says so again soon
            await self.store.keep_replica(self.replica_id, self.ttl_s)
        self._keeper = asyncio.get_running_loop().create_task(self._keep())

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            with contextlib.suppress(RedisError, OSError):
                await self.store.keep_replica(self.replica_id, self.ttl_s)
            for session in list(self.sessions.values()):
                try:
                    kept = await self.store.touch(session.id, session.user, self.ttl_s)
                except (RedisError, OSError) as exc:
                    log.warning("could not keep session %s alive in Redis: %s", session.id, type(exc).__name__)
                    continue
                if not kept and self.sessions.get(session.id) is session:
                    assert isinstance(session, ClusterSession)
                    self._lost(session)

    def _session(self, record: SessionRecord, epoch: int, cursor: str, worker: str | None) -> ClusterSession:
        options = SessionOptions(
            transport=record.transport,
            audio=record.audio,
            interim=record.interim,
            echo=record.echo,
            multi_user=record.multi_user,
            language=record.language,
            task=record.task,
            keyterms=record.keyterms,
            prompt=record.prompt,
            words=record.words,
        )
        session = ClusterSession(
            store=self.store,
            epoch=epoch,
            cursor=cursor,
            worker=worker,
            on_fenced=self._fenced,
            on_replaced=self._replaced,
            session_id=record.session_id,
            user=record.user,
            room=record.room,
            options=options,
            replay_limit=self.replay_limit,
            media_transport=self.transport(record.transport),
        )
        session.metrics = self.metrics
        return session

    async def start(self, user: str, options: SessionOptions, outbox: Outbox, room: str | None = None) -> Session:
        """A new session for `user`; the user's session on another replica, if any, ends first as
        'replaced' there (one session per user in the cluster, as in one process)."""
        try:
            await self._replace_elsewhere(user)
        except (RedisError, OSError) as exc:
            raise cluster_unavailable(exc) from None
        return await super().start(user, options, outbox, room)

    async def _replace_elsewhere(self, user: str) -> None:
        """Ask the replica holding the user's session to end it, and wait while it does (it
        finalises the open utterance for its client first, within `finish_timeout_s`). If no live
        replica holds it (none, or the one that did died) or it takes longer than that, take the
        session over and end it here."""
        previous = await self.store.user_session(user)
        if previous is None or previous in self.sessions:
            return  # none, or here: the base class replaces it
        state = await self.store.session(previous)
        if state is None:
            return
        owner = state.owner
        if owner is not None and await self.store.replica_alive(owner):
            await self.store.send_output(previous, ReplaceIn(by=self.replica_id))
            deadline = time.monotonic() + self.finish_timeout_s + REPLACE_POLL_S * 50
            while await self.store.session(previous) is not None:
                if time.monotonic() > deadline or not await self.store.replica_alive(owner):
                    log.warning("session %s: replica %s did not end it; ending it here", previous, owner)
                    break
                await asyncio.sleep(REPLACE_POLL_S)
            else:
                return
        await self.fetch(previous, user)  # the base class's start then ends it as 'replaced'

    def _replaced(self, session: ClusterSession, by: str) -> None:
        """The user started a session on another replica: end this one as 'replaced'."""
        if by != self.replica_id and self.sessions.get(session.id) is session:
            self._tasks.spawn(self.end(session, "replaced"))

    async def new_session(self, session_id: str, user: str, room: str, options: SessionOptions) -> Session:
        record = SessionRecord(
            session_id=session_id,
            user=user,
            room=room,
            transport="livekit" if options.transport == "livekit" else "ws",
            audio=options.audio,
            interim=options.interim,
            echo=options.echo,
            multi_user=options.multi_user,
            created_at=time.time(),
            language=options.language,
            task=options.task,
            keyterms=options.keyterms,
            prompt=options.prompt,
            words=options.words,
            commands=options.commands.specs() if options.commands else None,
        )
        try:
            epoch = await self.store.create_session(record, owner=self.replica_id, ttl_s=self.ttl_s)
        except (RedisError, OSError) as exc:
            raise cluster_unavailable(exc) from None
        return self._session(record, epoch, "0-0", None)

    async def open_media(self, session: Session) -> ReadyMedia:
        """Give the session to a worker, then open its media; if either fails the session ends."""
        assert isinstance(session, ClusterSession)
        session.start_link()
        try:
            await session.dispatch()
        except Exception as exc:
            await self.end(session, "error", notify=False)
            if isinstance(exc, (RedisError, OSError)):
                raise cluster_unavailable(exc) from None
            raise
        return await super().open_media(session)

    async def fetch(self, session_id: str, user: str) -> None:
        """Take over a session another replica held (or held before a restart), if it is the user's."""
        if session_id in self.sessions:
            return
        try:
            state = await self.store.session(session_id)
            if state is None or state.record.user != user:
                return  # resume then answers session.not_found
            epoch = await self.store.take_ownership(session_id, self.replica_id)
            entries, _ = await self.store.journal(session_id, 0)
        except (RedisError, OSError) as exc:
            raise cluster_unavailable(exc) from None
        session = self._session(state.record, epoch, state.cursor, state.worker)
        session.load_journal(entries, state.seq)
        if isinstance(session.media, WsSessionMedia):
            session.media.bytes_received = state.audio_bytes
        self.sessions[session.id] = session
        previous = self._by_user.get(user)
        if previous is not None and previous is not session:
            await self.end(previous, "replaced")
        self._by_user[user] = session
        session.start_link()
        log.info("session %s taken over by %s (seq %d, worker %s)", session.id, self.replica_id, session.seq, state.worker)

    def _fenced(self, session: ClusterSession) -> None:
        """The journal refused the session's event: another replica took it over, or Redis lost it."""
        self._tasks.spawn(self._after_fence(session))

    async def _after_fence(self, session: ClusterSession) -> None:
        try:
            gone = await self.store.session(session.id) is None
        except (RedisError, OSError):
            gone = False  # it was there a moment ago, for the fence to be checked
        if gone:
            self._lost(session)
        else:
            log.info("session %s continues on another replica", session.id)
            self._let_go(session, "resumed_elsewhere")

    def _lost(self, session: ClusterSession) -> None:
        """The session's state vanished from Redis (Redis restarted without its data, or the session
        expired while this replica could not reach it): it cannot go on, and its client is told."""
        log.error("session %s is gone from Redis (restarted without its data?); ending it as 'lost'", session.id)
        self._let_go(session, "lost")

    def _let_go(self, session: ClusterSession, reason: str) -> None:
        if self.sessions.get(session.id) is not session:
            return
        session.let_go(reason)
        self._forget(session)
        self._tasks.spawn(session.stop_link())

    def _forget(self, session: Session) -> None:
        for timer in (session.grace_task, session.limit_task):
            if timer is not None:
                timer.cancel()
        self.sessions.pop(session.id, None)
        if self._by_user.get(session.user) is session:
            del self._by_user[session.user]

    # -- monitor subscriptions (any replica's sessions: control/cluster_watch.py) ----------------------
    async def owner_of(self, session_id: str) -> str | None:
        try:
            state = await self.store.session(session_id)
        except (RedisError, OSError) as exc:
            raise cluster_unavailable(exc) from None
        return state.record.user if state is not None else None

    async def subscribe(self, subscription: Subscription) -> Session | None:
        """Register a subscription to a user's sessions, or to one session, wherever they run."""
        user = subscription.user
        if subscription.session_id is not None:
            user = await self.owner_of(subscription.session_id)
            if user is None:
                raise ProtocolError("session.not_found", "no live session with that id")
        assert user is not None  # the schema requires session_id or user
        try:
            await self._watch.follow(user)
        except (RedisError, OSError) as exc:
            raise cluster_unavailable(exc) from None
        self._subscriptions[subscription.id] = subscription
        return None

    def _drop_subscription(self, subscription: Subscription) -> None:
        self._subscriptions.pop(subscription.id, None)

    async def close(self) -> None:
        """Shutting down: let every session go (not ended) so its client resumes on another replica."""
        if self._keeper is not None:
            self._keeper.cancel()
        await self._watch.close()
        with contextlib.suppress(RedisError, OSError):  # its mark expires anyway
            await self.store.remove_replica(self.replica_id)
        for session in list(self.sessions.values()):
            assert isinstance(session, ClusterSession)
            self._forget(session)
            try:
                await asyncio.wait_for(session.flush(), 5.0)
                await self.store.release_ownership(session.id, session.epoch)
            except (TimeoutError, RedisError, OSError) as exc:
                log.warning("session %s: not handed back cleanly (%s)", session.id, type(exc).__name__)
            await session.stop_link()

    async def health(self) -> dict[str, Any]:
        """Redis and the workers, as /healthz reports them."""
        try:
            await self.store.ping()
            workers = await self.store.workers()
        except Exception as exc:
            return {"status": "degraded", "redis": f"unavailable: {type(exc).__name__}"}
        now = time.time()
        live = [w for w in workers if alive(w, now)]
        return {
            "redis": "ok",
            "workers": len(live),
            "capacity": sum(w.capacity for w in live if not w.draining),
            "active": sum(w.active for w in live),
        }
