"""One session on a transcription worker: its input stream → a pipeline → its output stream.

The reader applies the session's input entries in order (audio is fed, `finish` finalises, `end`
releases). Pipeline events, acknowledgements and checkpoints go through one queue to one writer,
so the output stream keeps their order (a `finished` follows the finals its finish produced).

Checkpoints make the worker replaceable (kill -9): whenever the pipeline is at rest (no utterance
open or waiting for its final) after an entry, the writer records, after every event before it,
where a replacement continues: that entry, the session time reached and the next utterance number.
A replacement (`ClusterStore.takeover_job`) then emits exactly the events this worker would have.
Every write is fenced on the session's `worker`: once the session is gone or another worker runs
it, this one stops quietly.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import deque
from functools import partial
from typing import Literal, Protocol

import msgspec
import numpy as np
from redis.exceptions import RedisError

from agent.asr import AsrEngine
from agent.config import PipelineConfig
from agent.events import FinalTranscript, PipelineEvent, SpeechEnded
from agent.pipeline import ResumePoint, TranscriptionPipeline
from control.cluster_store import ClusterStore, StreamEntry, until_redis_answers
from control.commands import CommandSet
from control.metrics import Metrics
from control.protocol import event_message
from control.schema import (
    AudioIn,
    Checkpoint,
    ClusterMessage,
    EndIn,
    EventOut,
    Finished,
    FinishIn,
    Released,
    SessionJob,
    encode,
)
from roomscribe.common.logs import log_context

log = logging.getLogger(__name__)


class WorkerPipeline(Protocol):
    """What a worker session needs of its transcription (agent.pipeline.TranscriptionPipeline, or a
    LiveKit session's pipelines: agent/worker_livekit.py)."""

    participant: str | None

    def feed(self, samples: np.ndarray, sample_rate: int, channels: int = 1) -> None: ...
    def resume_point(self) -> ResumePoint | None: ...
    def queued_final_audio_s(self) -> float: ...
    async def finish(self) -> None: ...
    async def aclose(self) -> None: ...


#: How the session's run ended: `end` from control, released (drain/stop), or gone (expired,
#: taken over by another worker).
Outcome = Literal["ended", "released", "gone"]
#: How long a session that ends waits for its last output to be written (Redis may be down).
_FLUSH_TIMEOUT_S = 10.0


class WorkerSession:
    """Runs one session's transcription on this worker until it ends, is released or is gone."""

    def __init__(
        self,
        store: ClusterStore,
        engine: AsrEngine,
        pipeline_config: PipelineConfig | None,
        job: SessionJob,
        *,
        worker_id: str,
        check_every_s: float = 2.0,
        read_block_ms: int = 250,
        commands: CommandSet | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """`commands`: the session's voice commands (its record's), matched here on each final."""
        self.store = store
        self.commands = commands
        self.metrics = metrics
        self.session_id = job.session_id
        self.worker_id = worker_id
        self.job = job
        self.check_every_s = check_every_s
        self.read_block_ms = read_block_ms
        self.pipeline: WorkerPipeline = self._new_pipeline(engine, pipeline_config)
        self.outcome: Outcome | None = None
        self._fed = job.input_after  # the last input entry applied
        self._checkpointed = job.input_after  # the last one a checkpoint was queued for
        self._applying = False  # an entry is half applied (a finish is awaited)
        self._lost = False  # a fenced write was refused: the session is gone or another worker's
        self._release_at: float | None = None  # release requested: at rest, or finalise at this time
        self._out: deque[ClusterMessage | None] = deque()  # None: the writer's last item
        self._sealed = False  # the writer's last item is queued: nothing more goes out
        self._out_ready = asyncio.Event()
        self._task: asyncio.Task[Outcome] | None = None
        self._writer: asyncio.Task[None] | None = None

    def _new_pipeline(self, engine: AsrEngine, pipeline_config: PipelineConfig | None) -> WorkerPipeline:
        """The session's one pipeline, continuing where the job says."""
        job = self.job
        return TranscriptionPipeline(
            engine, pipeline_config, self._on_event, start_s=job.audio_s, first_utterance=job.first_utterance
        )

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> asyncio.Task[Outcome]:
        """Start reading the input stream; the task's result says how the session's run ended."""
        context = contextvars.copy_context()  # its log lines name the session (roomscribe/common/logs.py)
        context.run(log_context, session=self.session_id)
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(), context=context)
        self._task = asyncio.get_running_loop().create_task(self._run(), context=context)
        return self._task

    async def release(self, timeout_s: float = 0.0) -> None:
        """Let the session go (drain, stop): keep transcribing until the pipeline is at rest, but
        after `timeout_s` finalise what is open; then checkpoint, `released`, and return."""
        if self._release_at is None:
            self._release_at = time.monotonic() + timeout_s
        else:
            self._release_at = min(self._release_at, time.monotonic() + timeout_s)
        if self._task is not None:
            await asyncio.wait({self._task})

    async def abort(self) -> None:
        """Stop at once with no goodbye, as if the process died (kill -9): tests of takeover."""
        for task in (self._task, self._writer):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._task, self._writer) if t is not None), return_exceptions=True)
        self._sealed = True
        await self.pipeline.aclose()
        self._out.clear()

    def queued_final_audio_s(self) -> float:
        return self.pipeline.queued_final_audio_s()

    # -- reading input -----------------------------------------------------------------------------
    async def _run(self) -> Outcome:
        try:
            outcome = await self._read_loop()
        except Exception:
            log.exception("session %s: worker failed; letting it go", self.session_id)
            outcome = "released"
        self.outcome = outcome
        await self._closing(outcome)
        if outcome == "ended":
            await self.pipeline.aclose()  # started utterances get their speech.end
        elif outcome == "released":
            self._maybe_checkpoint()  # where the next worker starts (if not queued yet)
        if outcome == "gone":
            log.info("session %s: gone (expired or run by another worker); closing quietly", self.session_id)
        else:
            self._send(Released(worker_id=self.worker_id))
        self._seal(flush=outcome != "gone")
        # Released sessions are at rest; any event a failed one still has is the next worker's to emit.
        await self.pipeline.aclose()
        if self._writer is not None:
            await asyncio.wait({self._writer}, timeout=_FLUSH_TIMEOUT_S)
            if not self._writer.done():
                log.warning("session %s: its last output could not be written; dropped", self.session_id)
                self._writer.cancel()
        return outcome

    async def _closing(self, outcome: Outcome) -> None:
        """The run is over (before the pipeline closes): what a subclass lets go of first."""

    async def _read_loop(self) -> Outcome:
        after = self.job.input_after
        next_check = time.monotonic() + self.check_every_s
        while True:
            if self._lost:
                return "gone"
            if self._release_at is not None:
                if self.pipeline.resume_point() is not None:
                    return "released"
                if time.monotonic() >= self._release_at:
                    self._applying = True
                    await self.pipeline.finish()  # finalise what is open now
                    self._applying = False
                    return "released"
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + self.check_every_s
                if not await self._still_ours():
                    return "gone"
            for entry in await self._read(after):
                ended = await self._apply(entry)
                after = entry.id
                if ended:
                    return "ended"
                if self._release_at is not None and self.pipeline.resume_point() is not None:
                    return "released"
                await asyncio.sleep(0)  # a backlog of entries never holds up the other sessions

    async def _read(self, after: str) -> list[StreamEntry]:
        try:
            return await self.store.read_input(self.session_id, after, block_ms=self.read_block_ms)
        except (RedisError, OSError) as exc:
            log.warning("session %s: reading input failed (%s); retrying", self.session_id, exc)
            await asyncio.sleep(0.5)
            return []

    async def _still_ours(self) -> bool:
        try:
            state = await self.store.session(self.session_id)
        except (RedisError, OSError) as exc:
            log.warning("session %s: registry check failed (%s)", self.session_id, exc)
            return True  # not known to be gone: Redis may be back soon
        return state is not None and state.worker in (None, self.worker_id)

    async def _apply(self, entry: StreamEntry) -> bool:
        """Apply one input entry; True when it ends the session."""
        message = entry.message
        self._applying = True
        try:
            if isinstance(message, AudioIn):
                self._feed(message, entry.pcm)
            elif isinstance(message, FinishIn):
                if message.all or message.participant == self.pipeline.participant:
                    await self.pipeline.finish()
                self._send(Finished(request=message.request))
            elif isinstance(message, EndIn):
                return True
            else:
                log.warning("session %s: unexpected input %s ignored", self.session_id, type(message).__name__)
        finally:
            self._applying = False
        self._fed = entry.id
        self._maybe_checkpoint()
        return False

    def _feed(self, message: AudioIn, pcm: bytes | None) -> None:
        if message.participant != self.pipeline.participant:
            log.warning(
                "session %s: audio of participant %r ignored (ws sessions have one speaker)",
                self.session_id, message.participant,
            )
            return
        try:
            samples = np.frombuffer(pcm or b"", dtype=message.dtype)
            if self.metrics is not None:
                self.metrics.count_audio("ws", len(samples) / (message.sample_rate * message.channels))
            self.pipeline.feed(samples, message.sample_rate, message.channels)
        except ValueError as exc:  # a frame that is not whole samples / channels
            log.warning("session %s: bad audio entry skipped: %s", self.session_id, exc)

    # -- writing output ------------------------------------------------------------------------------
    def _on_event(self, event: PipelineEvent) -> None:
        """Pipeline events (on the event loop, in order) → the output stream, numbered by control.

        A final's voice commands follow it as events of their own: each is journaled with its own
        output-stream entry, so a control replica that dies between the two loses neither."""
        if self.metrics is not None:
            self.metrics.observe_pipeline_event(event)
        try:
            message = EventOut(message=msgspec.Raw(encode(event_message(event, seq=0))))
        except Exception:
            log.exception("session %s: cannot encode %r", self.session_id, event)
            return
        self._send(message)
        if isinstance(event, FinalTranscript) and self.commands:
            for command in self.commands.messages(event):
                self._send(EventOut(message=msgspec.Raw(encode(command))))
        if isinstance(event, SpeechEnded):
            # The pipeline may be at rest once its emission is over: a checkpoint right after the
            # final keeps a replacement from repeating it.
            asyncio.get_running_loop().call_soon(self._maybe_checkpoint)

    def _maybe_checkpoint(self) -> None:
        if self._applying or self._fed == self._checkpointed:
            return
        point = self.pipeline.resume_point()
        if point is None:
            return
        self._checkpointed = self._fed
        self._send(Checkpoint(input_id=self._fed, audio_s=point.audio_s, next_utterance=point.next_utterance))

    def _send(self, item: ClusterMessage) -> None:
        if not self._sealed:
            self._out.append(item)
            self._out_ready.set()

    def _seal(self, *, flush: bool) -> None:
        """Queue the writer's end (after what is queued, or instead of it); later items are dropped."""
        if self._sealed:
            return
        self._sealed = True
        if not flush:
            self._out.clear()
        self._out.append(None)
        self._out_ready.set()

    async def _write_loop(self) -> None:
        while True:
            if not self._out:
                self._out_ready.clear()
                await self._out_ready.wait()
                continue
            item = self._out.popleft()
            if item is None:
                return
            if isinstance(item, Checkpoint) and self._out and isinstance(self._out[0], Checkpoint):
                continue  # a newer one follows at once
            if not await self._write(item):
                self._lost = True  # the reader stops; anything after this would be refused too
                self._seal(flush=False)

    async def _write(self, item: ClusterMessage) -> bool:
        """Write one item, retrying while Redis is unreachable; False when the write was fenced out."""
        if isinstance(item, Checkpoint):
            return await until_redis_answers(
                partial(self.store.set_checkpoint, self.session_id, self.worker_id, item),
                f"session {self.session_id}: checkpoint",
            )
        entry = await until_redis_answers(
            partial(self.store.send_output_as, self.session_id, self.worker_id, item),
            f"session {self.session_id}: writing output",
        )
        return entry is not None
