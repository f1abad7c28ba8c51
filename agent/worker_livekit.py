"""A cluster's LiveKit session on a worker: its agent joins the room and feeds the pipelines here.

The room's media never pass through the control tier. `LiveKitWorkerSession` is a WorkerSession
whose audio comes from the room: it runs the same `LiveKitSessionMedia` as one process does (agent,
publish gating, `listening` status, transcripts into the room, the room's deletion at the end) on
`RoomPipelines`, which gives it what it uses of a `Session` (one pipeline per participant; events
go up the output stream, numbered by control). Its input stream carries only requests: `vad`,
`ready`, `finish`, `end`.

Takeover: the worker checkpoints the session time (wall seconds since the session was created) every
second and after each event. A replacement joins the room, continues the utterance numbering, and
reports the audio it could not hear as `status {code: "transcription.gap", from, to}`: live media
are not replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import msgspec
import numpy as np

from agent.asr import AsrEngine
from agent.config import PipelineConfig
from agent.events import PipelineEvent
from agent.pipeline import ResumePoint, TranscriptionPipeline
from agent.worker_session import Outcome, WorkerPipeline, WorkerSession
from control.cluster_store import ClusterStore, StreamEntry
from control.commands import record_commands
from control.livekit_media import LiveKitSessionMedia, LiveKitTransport
from control.metrics import Metrics
from control.schema import (
    Checkpoint,
    EventOut,
    Finished,
    FinishIn,
    ReadyIn,
    SessionJob,
    SessionRecord,
    Status,
    VadIn,
    decode_server_message,
    encode,
)
from control.session import EventFactory, SessionOptions

log = logging.getLogger(__name__)

#: How often the session time is checkpointed (bounds how early a takeover's gap starts).
CHECKPOINT_EVERY_S = 1.0


class RoomPipelines:
    """A LiveKit session's pipelines on a worker (one per participant), and the session as its
    LiveKitSessionMedia sees it. As a WorkerPipeline it finishes, closes and measures them all."""

    participant: str | None = None  # a `finish` without participant means all of them

    def __init__(
        self, owner: LiveKitWorkerSession, record: SessionRecord, engine: AsrEngine, config: PipelineConfig | None
    ) -> None:
        self.owner = owner
        self.engine = engine
        self.config = config
        self.id = record.session_id
        self.user = record.user
        self.room = record.room
        self.options = SessionOptions(
            transport="livekit", audio=None, interim=record.interim, echo=record.echo, multi_user=record.multi_user,
            language=record.language, task=record.task,
        )  # fmt: skip
        self.created_at = record.created_at
        self.ended = False
        self.next_utterance = owner.job.first_utterance
        self._pipelines: dict[str | None, TranscriptionPipeline] = {}

    def now_s(self) -> float:
        """Session time: wall seconds since the session was created."""
        return max(0.0, round(time.time() - self.created_at, 3))

    # -- what LiveKitSessionMedia uses ----------------------------------------------------------------
    def pipeline(self, participant: str | None = None) -> TranscriptionPipeline:
        pipeline = self._pipelines.get(participant)
        if pipeline is None:
            pipeline = TranscriptionPipeline(
                self.engine,
                self.config,
                self._on_event,
                participant=participant,
                start_s=self.now_s(),
                first_utterance=self.next_utterance,
            )
            self._pipelines[participant] = pipeline
        return pipeline

    async def finish_speech(self, participant: str | None = None) -> None:
        pipeline = self._pipelines.get(participant)
        if pipeline is not None:
            await pipeline.finish()

    async def finish_all(self, timeout_s: float | None = None) -> bool:
        await asyncio.gather(*(p.finish() for p in list(self._pipelines.values())))
        return True

    def emit(self, event: EventFactory | dict[str, Any]) -> int:
        """A session event from the media (status, publish.start/stop): up the output stream."""
        message = event(0) if callable(event) else decode_server_message({**event, "seq": 0})
        self.owner.send_event(EventOut(message=msgspec.Raw(encode(message))))
        return 0

    def count_audio(self, seconds: float) -> None:
        if self.owner.metrics is not None:
            self.owner.metrics.count_audio("livekit", seconds)

    def _on_event(self, event: PipelineEvent) -> None:
        utterance = getattr(event, "utterance_id", None)
        if isinstance(utterance, str) and utterance[1:].isdigit():
            self.next_utterance = max(self.next_utterance, int(utterance[1:]) + 1)
        self.owner.on_pipeline_event(event)

    # -- as the WorkerSession's pipeline -----------------------------------------------------------------
    def feed(self, samples: np.ndarray, sample_rate: int, channels: int = 1) -> None:
        log.warning("session %s: audio on the input stream ignored (it comes from the room)", self.id)

    def resume_point(self) -> ResumePoint | None:
        """None while any participant's utterance is open (a draining worker waits for it)."""
        if any(p.resume_point() is None for p in self._pipelines.values()):
            return None
        return ResumePoint(self.now_s(), self.next_utterance)

    def queued_final_audio_s(self) -> float:
        return sum(p.queued_final_audio_s() for p in self._pipelines.values())

    async def finish(self) -> None:
        await self.finish_all()

    async def aclose(self) -> None:
        pipelines = list(self._pipelines.values())
        await asyncio.gather(*(p.aclose() for p in pipelines), return_exceptions=True)


class LiveKitWorkerSession(WorkerSession):
    """Runs one LiveKit session on this worker: `join` (the agent enters the room), then `start`."""

    def __init__(
        self,
        store: ClusterStore,
        engine: AsrEngine,
        pipeline_config: PipelineConfig | None,
        job: SessionJob,
        record: SessionRecord,
        livekit: LiveKitTransport,
        *,
        worker_id: str,
        check_every_s: float = 2.0,
        read_block_ms: int = 250,
        metrics: Metrics | None = None,
    ) -> None:
        self.record = record
        super().__init__(
            store, engine, pipeline_config, job, worker_id=worker_id, check_every_s=check_every_s,
            read_block_ms=read_block_ms, commands=record_commands(record), metrics=metrics,
        )  # fmt: skip
        assert isinstance(self.pipeline, RoomPipelines)
        self.room = self.pipeline
        self.media = LiveKitSessionMedia(livekit, self.room)
        if job.takeover:
            # Its own identity: the dead worker's agent may linger in the room until LiveKit drops it.
            self.media.identity = f"{self.media.identity}-{worker_id}"
        self._ticker: asyncio.Task[None] | None = None

    def _new_pipeline(self, engine: AsrEngine, pipeline_config: PipelineConfig | None) -> WorkerPipeline:
        return RoomPipelines(self, self.record, engine, pipeline_config)

    async def join(self) -> None:
        """The agent joins the room (raises if it cannot); after a takeover, the gap is reported and
        the agent receives at once (the client may be publishing)."""
        await self.media.join()
        if self.job.takeover:
            await self.media.continue_publishing()
            gap_from, gap_to = self.job.audio_s, self.room.now_s()
            self.room.emit(
                lambda seq: Status(
                    seq=seq,
                    code="transcription.gap",
                    message="the session moved to another transcription worker; the room's audio in between was not heard",
                    from_=gap_from,
                    to=gap_to,
                )
            )
            log.info("session %s: taken over; gap %.1f–%.1f s", self.session_id, gap_from, gap_to)

    async def leave(self) -> None:
        """Let the agent leave without starting (the job could not be accepted after all)."""
        await self.media.leave()

    def start(self) -> asyncio.Task[Outcome]:
        self._ticker = asyncio.get_running_loop().create_task(self._tick())
        return super().start()

    async def abort(self) -> None:
        """As if the process died: the agent's connection drops, nothing is said or deleted."""
        if self._ticker is not None:
            self._ticker.cancel()
        await self.media.leave()
        await super().abort()

    # -- events and checkpoints ---------------------------------------------------------------------------
    def send_event(self, message: EventOut) -> None:
        self._send(message)

    def on_pipeline_event(self, event: PipelineEvent) -> None:
        self.media.observe(event)
        self._on_event(event)
        self._maybe_checkpoint()  # the utterance numbering a replacement continues

    def _maybe_checkpoint(self) -> None:
        """Live media are always resumable (from now): only the session time and numbering matter."""
        if self._applying:
            return
        self._checkpointed = self._fed
        self._send(Checkpoint(input_id=self._fed, audio_s=self.room.now_s(), next_utterance=self.room.next_utterance))

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(CHECKPOINT_EVERY_S)
            self._maybe_checkpoint()

    # -- input: requests only ------------------------------------------------------------------------------
    async def _apply(self, entry: StreamEntry) -> bool:
        message = entry.message
        if not isinstance(message, (VadIn, ReadyIn, FinishIn)):
            return await super()._apply(entry)  # `end` (and stray audio, which is ignored)
        self._applying = True
        try:
            if isinstance(message, VadIn):
                await self.media.on_client_vad(message.speaking)
            elif isinstance(message, ReadyIn):
                await self.media.ready()
            else:
                if message.all or message.participant is None:
                    await self.room.finish_all()
                else:
                    await self.room.finish_speech(message.participant)
                self._send(Finished(request=message.request))
        finally:
            self._applying = False
        self._fed = entry.id
        self._maybe_checkpoint()
        return False

    async def _closing(self, outcome: Outcome) -> None:
        """The agent leaves first (no audio into closing pipelines); the room is deleted only when
        the session ended (released or gone: it goes on elsewhere)."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        self.room.ended = True
        if outcome == "ended":
            await self.media.close()
        else:
            await self.media.leave()
