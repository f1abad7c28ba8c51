"""The transcription worker role (`roomscribe worker`): takes sessions from Redis and transcribes them.

It announces itself with a heartbeat (capacity, sessions running, audio queued for the model,
draining), takes jobs from its job stream (`jobs:{worker id}`) and runs each session it accepts
(agent/worker_session.py; a LiveKit session's agent joins its room from here: agent/worker_livekit.py).
A job is refused (`refused`) when the worker is full or draining, a LiveKit session's when it has no
LiveKit server configured or its agent cannot join; a job for a session that no longer exists is ignored.
Control replicas talk to it only through the store (control/cluster_store.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from functools import partial

from redis.exceptions import RedisError

from agent.asr import AsrEngine
from agent.config import PipelineConfig
from agent.prompting import session_config
from agent.worker_livekit import LiveKitWorkerSession
from agent.worker_session import Outcome, WorkerSession
from control.cluster_store import ClusterStore, until_redis_answers
from control.commands import record_commands
from control.dispatch import LANGUAGE_UNSUPPORTED
from control.livekit_media import LiveKitTransport
from control.metrics import Metrics
from control.schema import Accepted, Refused, SessionJob, SessionRecord, WorkerState
from roomscribe.common.languages import language_refusal

log = logging.getLogger(__name__)

#: How long a draining worker lets each session run on to end its utterance in flight naturally
#: before it finalises it (a `stop` final) and lets the session go.
DRAIN_TIMEOUT_S = 10.0


class TranscriptionWorker:
    """A worker process's sessions, heartbeat and job loop."""

    def __init__(
        self,
        store: ClusterStore,
        engine: AsrEngine,
        pipeline_config: PipelineConfig | None,
        *,
        worker_id: str,
        capacity: int,
        heartbeat_s: float = 1.0,
        session_check_s: float = 2.0,
        livekit: LiveKitTransport | None = None,
    ) -> None:
        """`livekit`: the LiveKit server this worker's agents join (None: it runs ws sessions only)."""
        self.store = store
        self.engine = engine
        self.pipeline_config = pipeline_config
        self.worker_id = worker_id
        self.capacity = capacity
        self.heartbeat_s = heartbeat_s
        self.session_check_s = session_check_s
        self.livekit = livekit
        self.sessions: dict[str, WorkerSession] = {}
        #: This process's metrics (`GET /metrics` on its health port).
        self.metrics = Metrics()
        self.metrics.watch(
            sessions=lambda: ["livekit" if isinstance(s, LiveKitWorkerSession) else "ws" for s in self.sessions.values()],
            engine_stats=lambda: engine.stats,
        )
        self.draining = False
        self._beat_now = asyncio.Event()
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._job_task: asyncio.Task[None] | None = None

    def state(self) -> WorkerState:
        """What the heartbeat announces now."""
        return WorkerState(
            worker_id=self.worker_id,
            capacity=self.capacity,
            active=len(self.sessions),
            queued_final_audio_s=round(sum(s.queued_final_audio_s() for s in self.sessions.values()), 3),
            draining=self.draining,
            at=time.time(),
        )

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Announce the worker and take jobs sent from now on (raises if Redis cannot be reached)."""
        after = await self.store.last_job_id(self.worker_id)
        await self.store.heartbeat(self.state())
        loop = asyncio.get_running_loop()
        self._heartbeat_task = loop.create_task(self._heartbeat_loop())
        self._job_task = loop.create_task(self._job_loop(after))
        log.info("worker %s: taking up to %d sessions", self.worker_id, self.capacity)

    async def drain(self, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        """SIGTERM: take no new session, let each one end its utterance in flight (finalising it
        after `timeout_s`), release it (`released`: control hands it on from its checkpoint), stop."""
        self.draining = True
        self._beat_now.set()
        log.info("worker %s: draining %d sessions", self.worker_id, len(self.sessions))
        await asyncio.gather(*(s.release(timeout_s) for s in list(self.sessions.values())))
        await self.stop()

    async def stop(self) -> None:
        """Stop now: each session's open utterance is finalised and the session released; the
        worker leaves the registry."""
        self.draining = True
        await _cancel(self._job_task)
        await asyncio.gather(*(s.release(0.0) for s in list(self.sessions.values())))
        await _cancel(self._heartbeat_task)
        try:
            await self.store.remove_worker(self.worker_id)
        except (RedisError, OSError) as exc:
            log.warning("worker %s: could not leave the registry (%s); it ages out", self.worker_id, exc)

    async def abort(self) -> None:
        """Stop with no goodbye at all, as if the process were killed (kill -9): for tests of takeover."""
        await _cancel(self._job_task)
        await _cancel(self._heartbeat_task)
        await asyncio.gather(*(s.abort() for s in list(self.sessions.values())))

    # -- heartbeat ---------------------------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._beat_now.wait(), self.heartbeat_s)
            self._beat_now.clear()
            try:
                await self.store.heartbeat(self.state())
            except (RedisError, OSError) as exc:
                log.warning("worker %s: heartbeat failed (%s)", self.worker_id, exc)

    # -- jobs --------------------------------------------------------------------------------------
    async def _job_loop(self, after: str) -> None:
        while True:
            entries = await until_redis_answers(
                partial(self.store.read_jobs, self.worker_id, after, block_ms=1000), f"worker {self.worker_id}: reading jobs"
            )
            for entry in entries:
                after = entry.id
                if not isinstance(entry.message, SessionJob):
                    log.warning("worker %s: not a job: %s", self.worker_id, type(entry.message).__name__)
                    continue
                try:
                    await self._take(entry.message)
                except (RedisError, OSError) as exc:
                    log.warning("worker %s: job for %s failed (%s)", self.worker_id, entry.message.session_id, exc)
                except Exception:
                    log.exception("worker %s: job for %s failed", self.worker_id, entry.message.session_id)

    async def _take(self, job: SessionJob) -> None:
        sid = job.session_id
        if sid in self.sessions:
            log.warning("worker %s: already runs session %s; job ignored", self.worker_id, sid)
            return
        refusal = "draining" if self.draining else "full" if len(self.sessions) >= self.capacity else None
        state = await self.store.session(sid)
        if state is None:
            log.info("worker %s: session %s is gone; job ignored", self.worker_id, sid)
            return
        if refusal is None and state.record.transport == "livekit" and self.livekit is None:
            refusal = "transport"  # this worker has no LiveKit server configured
        if refusal is None:
            refusal = self._language_refusal(state.record)
        session: WorkerSession | None = None
        if refusal is None:
            session = await self._session(job, state.record)
            if session is None:
                refusal = "livekit.unavailable"
        if refusal is not None or session is None:
            await self.store.send_output(sid, Refused(worker_id=self.worker_id, reason=refusal or "?"))
            return
        await self.store.set_worker(sid, self.worker_id)
        if await self.store.send_output_as(sid, self.worker_id, Accepted(worker_id=self.worker_id)) is None:
            if isinstance(session, LiveKitWorkerSession):
                await session.leave()
            return  # gone meanwhile, or given to another worker
        self.sessions[sid] = session
        session.start().add_done_callback(lambda task: self._session_done(sid, session, task))
        self._beat_now.set()
        log.info("worker %s: runs session %s (input after %s)", self.worker_id, sid, job.input_after)

    def _language_refusal(self, record: SessionRecord) -> str | None:
        """`language.unsupported: why` when this worker's model cannot serve the session's language or task."""
        language = record.language or self.engine.config.language
        refused = language_refusal(language, record.task, self.engine.languages)
        return None if refused is None else f"{LANGUAGE_UNSUPPORTED}: {refused}"

    async def _session(self, job: SessionJob, record: SessionRecord) -> WorkerSession | None:
        """The session's runner; a LiveKit session's agent is in the room when it returns (None:
        it could not join)."""
        config = session_config(
            self.pipeline_config or PipelineConfig(), keyterms=record.keyterms, prompt=record.prompt, words=record.words
        )
        config = dataclasses.replace(config, language=record.language, task=record.task)
        if record.transport != "livekit" or self.livekit is None:
            return WorkerSession(
                self.store, self.engine, config, job, worker_id=self.worker_id,
                check_every_s=self.session_check_s, commands=record_commands(record), metrics=self.metrics,
            )  # fmt: skip
        session = LiveKitWorkerSession(
            self.store, self.engine, config, job, record, self.livekit,
            worker_id=self.worker_id, check_every_s=self.session_check_s, metrics=self.metrics,
        )  # fmt: skip
        try:
            await session.join()
        except Exception:
            log.exception("worker %s: session %s: the agent could not join room %r", self.worker_id, job.session_id, record.room)
            await session.leave()
            return None
        return session

    def _session_done(self, sid: str, session: WorkerSession, task: asyncio.Task[Outcome]) -> None:
        if self.sessions.get(sid) is session:
            del self.sessions[sid]
        self._beat_now.set()
        if task.cancelled():
            return
        if (error := task.exception()) is not None:
            log.error("worker %s: session %s failed", self.worker_id, sid, exc_info=error)
        else:
            log.info("worker %s: session %s %s", self.worker_id, sid, session.outcome)


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
