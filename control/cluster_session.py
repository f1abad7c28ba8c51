"""Sessions of a control replica in a cluster: transcription on a worker, state in Redis.

A `ClusterSession` is a `Session` whose pipelines run on a worker (`RemotePipeline` sends audio and
finish requests down the session's input stream) and whose events come back up its output stream.
Every numbered event is recorded in Redis (`ClusterStore.journal_append`) before it goes to the
socket, with the output-stream entry it came from, so any replica can resume the session: it loads
the journal, takes ownership (the old owner is fenced out of the journal) and reads the worker's
events from where the journal stopped. Nothing is sent twice and nothing is lost when a replica dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Literal, TypeVar

import msgspec
import numpy as np
from redis.exceptions import RedisError

from control.cluster_store import ClusterStore, StreamEntry, until_redis_answers
from control.dispatch import BUSY_RETRY_AFTER_S, LANGUAGE_UNSUPPORTED, alive, candidates
from control.media import MediaTransport
from control.schema import (
    Accepted,
    AudioIn,
    ClusterMessage,
    Command,
    EndIn,
    EventOut,
    FinalTranscript,
    Finished,
    FinishIn,
    Forwardable,
    InterimTranscript,
    Numbered,
    ProtocolError,
    Refused,
    ReplaceIn,
    ServerMessage,
    SessionEnded,
    SessionEvent,
    SessionJob,
    SpeechEnd,
    SpeechStart,
    Status,
    Token,
    Watched,
    decode_server_message,
    encode,
)
from control.session import Session
from control.ws_media import WsSessionMedia

if TYPE_CHECKING:
    from control.session import SessionOptions

log = logging.getLogger(__name__)

#: How long a worker has to accept a session before the next one is asked.
ACCEPT_TIMEOUT_S = 5.0
#: How long an output-stream read waits for an entry before it looks again.
READ_BLOCK_MS = 1000
#: How often a session checks that its worker is alive.
WATCH_S = 1.0

T = TypeVar("T")


def cluster_unavailable(exc: BaseException) -> ProtocolError:
    """The error a request gets while Redis cannot be reached."""
    return ProtocolError(
        "cluster.unavailable",
        f"the cluster's Redis cannot be reached ({type(exc).__name__}); try again shortly",
        retry_after=BUSY_RETRY_AFTER_S,
    )


class UtteranceLedger:
    """Which utterances a session has opened and closed, to drop what a replacement worker repeats:
    it re-sends the events a dead worker sent after its last checkpoint, with the same ids."""

    def __init__(self) -> None:
        self._started: set[tuple[str | None, str]] = set()
        self._final: set[tuple[str | None, str]] = set()
        self._ended: set[tuple[str | None, str]] = set()
        self._commands: set[tuple[str | None, str, str]] = set()

    def repeated(self, message: ServerMessage) -> bool:
        """Whether `message` repeats what was already sent (and note it if not)."""
        utterance = getattr(message, "utterance_id", None)
        if utterance is None or isinstance(message, Status):
            return False
        key = (getattr(message, "participant", None), utterance)
        if key in self._ended:
            return True
        if isinstance(message, SpeechStart):
            if key in self._started:
                return True
            self._started.add(key)
        elif isinstance(message, FinalTranscript):
            if key in self._final:
                return True
            self._final.add(key)
        elif isinstance(message, Command):
            said = (*key, message.name)
            if said in self._commands:
                return True
            self._commands.add(said)
        elif isinstance(message, SpeechEnd):
            self._ended.add(key)
        return False


class RemotePipeline:
    """A SessionPipeline whose transcription runs on the session's worker."""

    def __init__(self, session: ClusterSession, participant: str | None) -> None:
        self.session = session
        self.participant = participant

    def feed(self, samples: np.ndarray, sample_rate: int, channels: int = 1) -> None:
        dtype: Literal["int16", "float32"] = "float32" if samples.dtype == np.float32 else "int16"
        pcm = np.ascontiguousarray(samples, dtype=dtype).tobytes()
        message = AudioIn(sample_rate=sample_rate, channels=channels, dtype=dtype, participant=self.participant)
        seconds = len(samples) / (channels * sample_rate)
        self.session.send_input(message, pcm, seconds)

    def queued_final_audio_s(self) -> float:
        """Audio not yet handed to Redis (the worker's own backlog is its heartbeat's)."""
        return self.session.queued_audio_s

    async def finish(self) -> None:
        await self.session.finish_remote(self.participant)

    async def aclose(self) -> None:
        """Nothing here: the worker releases the session when it ends (ClusterSession.close_pipelines)."""


class ClusterSession(Session):
    """A session whose pipelines run on a worker and whose events are journaled in Redis."""

    def __init__(
        self,
        *,
        store: ClusterStore,
        epoch: int,
        cursor: str,
        worker: str | None,
        on_fenced: Callable[[ClusterSession], None],
        on_replaced: Callable[[ClusterSession, str], None],
        session_id: str,
        user: str,
        room: str,
        options: SessionOptions,
        replay_limit: int,
        media_transport: MediaTransport,
    ) -> None:
        super().__init__(
            session_id=session_id,
            user=user,
            room=room,
            options=options,
            pipeline_factory=self._no_local_pipeline,
            replay_limit=replay_limit,
            media_transport=media_transport,
        )
        self.store = store
        self.replay_limit = replay_limit
        self.epoch = epoch
        self.cursor = cursor
        self.worker = worker
        self.fenced = False
        #: Its worker died and no other took it yet (tried again every WATCH_S).
        self.orphaned = False
        self.queued_audio_s = 0.0
        self._on_fenced = on_fenced
        self._on_replaced = on_replaced
        self._event_cursor: str | None = None
        self._seen = UtteranceLedger()
        self._input: asyncio.Queue[tuple[ClusterMessage, bytes | None, int | None, float]] = asyncio.Queue()
        self._journal: asyncio.Queue[tuple[Numbered, str | None]] = asyncio.Queue()
        self._watched: asyncio.Queue[Forwardable] = asyncio.Queue()
        self._finishes: dict[str, asyncio.Future[None]] = {}
        self._answer: asyncio.Future[ClusterMessage] | None = None
        self._request_ids = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []

    @staticmethod
    def _no_local_pipeline(*_: object) -> RemotePipeline:
        raise AssertionError("a cluster session's pipelines are RemotePipelines (see ClusterSession.pipeline)")

    # -- pipelines on the worker -----------------------------------------------------------------------
    def pipeline(self, participant: str | None = None) -> RemotePipeline:
        pipeline = self._pipelines.get(participant)
        if not isinstance(pipeline, RemotePipeline):
            pipeline = RemotePipeline(self, participant)
            self._pipelines[participant] = pipeline
        return pipeline

    def send_input(self, message: ClusterMessage, pcm: bytes | None = None, seconds: float = 0.0) -> None:
        """Queue an input entry for the worker (written in order; a Redis outage delays it, never drops it)."""
        audio_bytes = self.media.bytes_received if isinstance(self.media, WsSessionMedia) and pcm is not None else None
        self.queued_audio_s += seconds
        self._input.put_nowait((message, pcm, audio_bytes, seconds))

    async def finish_remote(self, participant: str | None) -> None:
        """Ask the worker to finalise open utterances; returns once their finals went out."""
        request = f"f{next(self._request_ids)}"
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._finishes[request] = done
        self.send_input(FinishIn(request=request, participant=participant, all=participant is None))
        try:
            await done
        finally:
            self._finishes.pop(request, None)

    async def finish_all(self, timeout_s: float | None = None) -> bool:
        if self.worker is None and not self._pipelines:
            return True  # never ran on a worker (none had room): nothing to finalise
        try:
            await asyncio.wait_for(self.finish_remote(None), timeout_s)
        except TimeoutError:
            return False
        return True

    # -- events: journaled, then sent ---------------------------------------------------------------------
    def deliver(self, message: Numbered) -> None:
        self._journal.put_nowait((message, self._event_cursor))

    def on_worker_message(self, message: ServerMessage, cursor: str) -> None:
        """A session event from the worker (its `seq` is set here)."""
        if not isinstance(message, SessionEvent):
            log.error("session %s: the worker sent %s, which is not a session event; skipped", self.id, message.type)
            return
        if self.ended or (isinstance(message, InterimTranscript) and not self.options.interim):
            return
        if self._seen.repeated(message):
            return
        self._event_cursor = cursor
        try:
            self.emit(lambda seq: msgspec.structs.replace(message, seq=seq))
        finally:
            self._event_cursor = None

    def load_journal(self, entries: list[tuple[int, bytes]], seq: int) -> None:
        """Continue a session another replica held: its replayable events and its last seq."""
        for _, raw in entries:
            message = decode_server_message(msgspec.json.decode(raw))
            if isinstance(message, (SessionEvent, Token)):
                self._log.append(message)
                self._seen.repeated(message)
        self.seq = seq

    # -- tasks ----------------------------------------------------------------------------------------
    def start_link(self) -> None:
        """Start writing input and journal, reading the worker's output, and watching the worker."""
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._write_input()),
            loop.create_task(self._write_journal()),
            loop.create_task(self._read_output()),
            loop.create_task(self._watch_worker()),
            loop.create_task(self._publish_watched()),
        ]

    async def stop_link(self) -> None:
        """Stop the session's Redis tasks (what monitors are owed is published first, 5 s at most)."""
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._watched.join(), 5.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def flush(self) -> None:
        """Wait until every queued input entry and event is written (and published to monitors)."""
        await self._input.join()
        await self._journal.join()
        await self._watched.join()

    def _notify_watchers(self, message: Forwardable) -> None:
        """Monitors may be on any replica: publish the event on the user's watch channel (in order)
        for control/cluster_watch.py to deliver; none is delivered from here directly."""
        self._watched.put_nowait(message)

    async def _publish_watched(self) -> None:
        while True:
            message = await self._watched.get()
            watched = Watched(session_id=self.id, user=self.user, message=msgspec.Raw(encode(message)))
            await until_redis_answers(partial(self.store.publish_watched, watched), f"session {self.id}: publishing to monitors")
            self._watched.task_done()

    async def _write_input(self) -> None:
        while True:
            message, pcm, audio_bytes, seconds = await self._input.get()
            await until_redis_answers(
                partial(self.store.send_input, self.id, message, pcm, audio_bytes=audio_bytes),
                f"session {self.id}: sending input",
            )
            self.queued_audio_s = max(0.0, self.queued_audio_s - seconds)
            self._input.task_done()

    async def _write_journal(self) -> None:
        while True:
            message, cursor = await self._journal.get()
            seq = message.seq or 0
            append = partial(
                self.store.journal_append,
                self.id, self.epoch, seq, encode(message), cursor=cursor, maxlen=self.replay_limit, keep=message.replayed,
            )  # fmt: skip
            owned = await until_redis_answers(append, f"session {self.id}: journaling an event")
            self._journal.task_done()
            if not owned:
                self.fenced = True
                self._on_fenced(self)
                return
            Session.deliver(self, message)

    async def _read_output(self) -> None:
        while True:
            entries = await until_redis_answers(
                partial(self.store.read_output, self.id, self.cursor, block_ms=READ_BLOCK_MS),
                f"session {self.id}: reading output",
            )
            for entry in entries:
                self.cursor = entry.id
                self._on_output(entry)

    def _on_output(self, entry: StreamEntry) -> None:
        message = entry.message
        if isinstance(message, EventOut):
            try:
                event = decode_server_message(msgspec.json.decode(message.message))
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                log.error("session %s: a worker event this replica cannot read was skipped: %s", self.id, exc)
                return
            self.on_worker_message(event, entry.id)
        elif isinstance(message, Finished):
            done = self._finishes.get(message.request)
            if done is not None and not done.done():
                # Its finals are queued for the journal before this: resolve once they are written.
                asyncio.get_running_loop().create_task(self._resolve_after_journal(done))
        elif isinstance(message, ReplaceIn):
            log.info("session %s: its user started a session on %s; ending this one", self.id, message.by)
            self._on_replaced(self, message.by)
        elif isinstance(message, (Accepted, Refused)) and self._answer is not None and not self._answer.done():
            self._answer.set_result(message)

    async def _resolve_after_journal(self, done: asyncio.Future[None]) -> None:
        await self._journal.join()
        if not done.done():
            done.set_result(None)

    # -- dispatch and takeover ------------------------------------------------------------------------
    async def dispatch(self, job: SessionJob | None = None) -> None:
        """Give the session to the least loaded worker with room (`job`: where it continues, after a
        takeover); `server.busy` when none has any."""
        job = job or SessionJob(session_id=self.id)
        tried: set[str] = set()
        unsupported = ""  # a worker's model could not serve the session's language or task
        while True:
            states = await self.store.workers()
            choices = candidates(states, time.time(), exclude=tried)
            if not choices and unsupported:
                raise ProtocolError(LANGUAGE_UNSUPPORTED, f"no transcription worker's model can serve it: {unsupported}")
            if not choices:
                raise ProtocolError(
                    "server.busy",
                    f"no transcription worker has room for a session ({len(states)} known); try again later",
                    retry_after=BUSY_RETRY_AFTER_S,
                )
            worker = choices[0].worker_id
            tried.add(worker)
            self._answer = asyncio.get_running_loop().create_future()
            await self.store.send_job(worker, job)
            try:
                answer = await asyncio.wait_for(self._answer, ACCEPT_TIMEOUT_S)
            except TimeoutError:
                log.warning("session %s: worker %s did not answer within %.0f s", self.id, worker, ACCEPT_TIMEOUT_S)
                continue
            finally:
                self._answer = None
            if isinstance(answer, Accepted):
                self.worker = answer.worker_id
                log.info("session %s runs on worker %s", self.id, self.worker)
                return
            log.info("session %s: worker %s refused it (%s)", self.id, worker, getattr(answer, "reason", "?"))
            if isinstance(answer, Refused) and answer.reason.startswith(LANGUAGE_UNSUPPORTED):
                unsupported = answer.reason.removeprefix(LANGUAGE_UNSUPPORTED).lstrip(": ")

    async def _watch_worker(self) -> None:
        """Move the session to another worker when its worker stops heartbeating."""
        while True:
            await asyncio.sleep(WATCH_S)
            if self.orphaned:
                await self._take_over()  # the last attempt found no worker with room, or no Redis
                continue
            if self.worker is None:
                continue  # being dispatched (or never was): nothing to watch yet
            try:
                states = {s.worker_id: s for s in await self.store.workers()}
            except (RedisError, OSError):
                continue
            state = states.get(self.worker)
            if state is not None and alive(state, time.time()):
                continue
            await self._take_over()

    async def _take_over(self) -> None:
        dead, self.worker = self.worker, None
        if dead is not None:
            log.warning("session %s: worker %s is gone; moving the session", self.id, dead)
        self.orphaned = True
        try:
            await self.dispatch(await self.store.takeover_job(self.id))
            self.orphaned = False
        except ProtocolError as exc:
            log.error("session %s: no worker can take it over (%s); trying again", self.id, exc.code)
        except (RedisError, OSError) as exc:
            log.error("session %s: cannot move it while Redis is unreachable (%s); trying again", self.id, type(exc).__name__)

    # -- end --------------------------------------------------------------------------------------------
    async def close_pipelines(self) -> None:
        """The session ended: the worker releases it, and its state leaves Redis."""
        self._pipelines.clear()
        if not self.fenced:
            if self.worker is not None:
                self.send_input(EndIn(reason="ended"))
            try:
                await asyncio.wait_for(self.flush(), 10.0)
            except TimeoutError:
                log.warning("session %s: Redis did not take its last messages within 10 s", self.id)
        await self.stop_link()
        if not self.fenced:
            try:
                await self.store.delete_session(self.id, self.user, epoch=self.epoch)
            except (RedisError, OSError) as exc:
                log.warning("session %s: could not remove it from Redis (%s); it expires", self.id, type(exc).__name__)

    def let_go(self, reason: str) -> None:
        """This replica is done with the session (another took it over: "resumed_elsewhere"; Redis
        lost it: "lost"): tell this replica's socket, if any, and let go."""
        ended = SessionEnded(session_id=self.id, reason=reason)
        if self.outbox is not None:
            self.outbox.send_message(ended)
            self.outbox = None
        if reason == "lost":
            self._notify_watchers(ended)
        self.ended = True
