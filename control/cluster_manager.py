"""The session manager of a control replica in a cluster (`roomscribe control`).

Sessions are registered in Redis and run on workers (control/cluster_session.py). Any replica can
resume any session: `fetch` loads it from Redis and takes it over. A replica that shuts down ends
no session: it lets go of them, and their clients resume on another replica (or on this one after a
restart) within the grace period. While Redis cannot be reached, new sessions are refused with
`cluster.unavailable`; sessions already running hold their audio and events until it is back.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Mapping
from typing import Any

from redis.exceptions import RedisError

from control.cluster_session import ClusterSession, cluster_unavailable
from control.cluster_store import ClusterStore
from control.dispatch import alive
from control.media import MediaTransport, ReadyMedia
from control.schema import SessionRecord
from control.session import Session, SessionManager, SessionOptions
from control.ws_media import WsSessionMedia

log = logging.getLogger(__name__)


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

    async def start_keeper(self) -> None:
        """Keep this replica's sessions alive in Redis (they expire a grace period after it dies)."""
        self._keeper = asyncio.get_running_loop().create_task(self._keep())

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            for session in list(self.sessions.values()):
                try:
                    await self.store.touch(session.id, session.user, self.ttl_s)
                except (RedisError, OSError) as exc:
                    log.warning("could not keep session %s alive in Redis: %s", session.id, type(exc).__name__)

    def _session(self, record: SessionRecord, epoch: int, cursor: str, worker: str | None) -> ClusterSession:
        options = SessionOptions(
            transport=record.transport,
            audio=record.audio,
            interim=record.interim,
            echo=record.echo,
            multi_user=record.multi_user,
            language=record.language,
            task=record.task,
        )
        return ClusterSession(
            store=self.store,
            epoch=epoch,
            cursor=cursor,
            worker=worker,
            on_fenced=self._moved_away,
            session_id=record.session_id,
            user=record.user,
            room=record.room,
            options=options,
            replay_limit=self.replay_limit,
            media_transport=self.transport(record.transport),
        )

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

    def _moved_away(self, session: ClusterSession) -> None:
        """Another replica resumed the session: drop it here without ending it."""
        log.info("session %s continues on another replica", session.id)
        session.moved_away()
        self._forget(session)
        asyncio.get_running_loop().create_task(session.stop_link())

    def _forget(self, session: Session) -> None:
        for timer in (session.grace_task, session.limit_task):
            if timer is not None:
                timer.cancel()
        self.sessions.pop(session.id, None)
        if self._by_user.get(session.user) is session:
            del self._by_user[session.user]

    async def close(self) -> None:
        """Shutting down: let every session go (not ended) so its client resumes on another replica."""
        if self._keeper is not None:
            self._keeper.cancel()
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
