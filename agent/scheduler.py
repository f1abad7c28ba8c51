"""Priority scheduler for ASR jobs shared by all pipelines of a process.

Rules: finals and speculative finals, owners in turns; then interims.

- Finals are never dropped and are served fairly: each owner (pipeline) has its own FIFO of
  finals and owners take turns (round-robin), so a session that queues many finals at once (audio
  sent faster than real time) delays its own finals; another owner's next final waits for at most
  one round (one final of each waiting owner) after the batch already running. An owner with more
  than `max_owner_finals` queued is reported (a log warning,
  `finals_backlog_reports` in `snapshot()`, `owner_backlog()`), never dropped: its pipeline tells
  the client (`asr_backlog`) and the transport may slow the sender.
- A speculative final (decoded like a final, started when silence begins so the result is ready
  when the utterance is declared over) takes its owner's turn like a final, after that owner's
  queued finals; it is dropped if its owner cancels it or it is stale at dispatch.
- Each owner has at most one pending interim and one pending speculative final: a newer one
  replaces the stale one, which completes with `None` and counts as dropped; a pending interim
  whose `is_stale()` is true at dispatch is dropped too; the number of pending interims over all
  owners is bounded (the oldest is dropped).

Workers take *batches* (`next_batch(max_batch)`), all of one kind, so a backend can run several
owners' windows in one model call; a batch of finals is filled by the same turns (one per owner per
round). While another owner is *active* (submitted work in the last `active_s`) but has nothing
queued — it is speaking, and its final is coming — a batch gives each owner one slot only, so that
final waits for a short batch, not for a full batch of a backlogged owner's finals; otherwise
(a lone backlog, or every active owner already waiting) turns fill the batch.
Thread-safe; independent of asyncio (futures are `concurrent.futures.Future`).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from roomscribe.common.audio import SAMPLE_RATE

from .prompting import DecoderPrompt, with_context

if TYPE_CHECKING:
    from .asr import AsrResult


log = logging.getLogger(__name__)


class JobKind(enum.Enum):
    FINAL = "final"
    SPECULATIVE = "speculative"  # a final started early; may be discarded
    INTERIM = "interim"

    @property
    def decodes_as_final(self) -> bool:
        return self is not JobKind.INTERIM


@dataclass(eq=False)
class AsrJob:
    """One transcription request: 16 kHz mono float32 audio plus how to decode it."""

    kind: JobKind
    owner: str
    audio: np.ndarray
    word_timestamps: bool = False
    prompt: DecoderPrompt | None = None  # keyterms / prompt biasing the decoder (None: none)
    is_stale: Callable[[], bool] | None = None
    context: str = ""  # what was said before (the session's recent finals), a decoder prompt for finals
    language: str | None = None  # a code, or "auto" (detect); None: the engine's `AsrConfig.language`
    task: str = "transcribe"  # or "translate" (into English)
    future: Future[AsrResult | None] = field(default_factory=Future)
    submitted_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    drop_reason: str | None = None  # "replaced" | "superseded" | "overflow" | "stale" | "closed"

    @property
    def decoder_prompt(self) -> DecoderPrompt | None:
        """What biases this job's decoding: its prompt, and for a final what was said before it."""
        if not (self.context and self.kind.decodes_as_final):
            return self.prompt
        return with_context(self.prompt, self.context)


@dataclass(frozen=True)
class OwnerBacklog:
    """One owner's finals waiting for the model (queued, not yet running)."""

    finals: int
    audio_s: float


class SchedulerClosed(RuntimeError):
    """Raised when submitting to a closed scheduler."""


class AsrScheduler:
    """Queues jobs and hands them to worker threads in priority order."""

    def __init__(
        self,
        max_pending_interims: int = 64,
        max_owner_finals: int = 4,
        active_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cond = threading.Condition()
        self._finals: dict[str, deque[AsrJob]] = {}  # owner → its queued finals, in order
        # Owners with queued finals or a pending speculative final; the next to serve first.
        self._turns: deque[str] = deque()
        self._active_s = active_s
        self._clock = clock
        self._last_submit: dict[str, float] = {}  # owner → when it last submitted (recent only)
        self._final_count = 0
        self._max_owner_finals = max(1, max_owner_finals)
        self._over_bound: set[str] = set()  # reported; re-armed when the owner's queue empties
        self.finals_backlog_reports = 0
        self._interims: OrderedDict[str, AsrJob] = OrderedDict()  # owner → job, oldest first
        self._speculative: OrderedDict[str, AsrJob] = OrderedDict()  # owner → job, oldest first
        self._max_interims = max(1, max_pending_interims)
        self._closed = False
        self._running = 0
        self.submitted = dict.fromkeys(JobKind, 0)
        self.completed = dict.fromkeys(JobKind, 0)
        self.interims_dropped = 0
        self.speculative_dropped = 0

    # -- producer side -------------------------------------------------------------------------

    def submit(self, job: AsrJob) -> Future[AsrResult | None]:
        """Queue a job; returns its future (result: backend result, or None if dropped)."""
        dropped: list[AsrJob] = []
        dropped_spec: AsrJob | None = None
        with self._cond:
            if self._closed:
                raise SchedulerClosed("ASR scheduler is closed")
            self.submitted[job.kind] += 1
            self._last_submit[job.owner] = self._clock()
            if job.kind is JobKind.FINAL:
                # A final supersedes the owner's pending interim.
                stale = self._interims.pop(job.owner, None)
                if stale is not None:
                    stale.drop_reason = "superseded"
                    dropped.append(stale)
                self._queue_final(job)
            elif job.kind is JobKind.SPECULATIVE:
                old = self._speculative.pop(job.owner, None)
                if old is not None:
                    old.drop_reason = "replaced"
                    self.speculative_dropped += 1
                    dropped_spec = old
                if job.owner not in self._finals and old is None:
                    self._turns.append(job.owner)  # waits for its turn like a final
                self._speculative[job.owner] = job
            else:
                stale = self._interims.pop(job.owner, None)
                if stale is not None:
                    stale.drop_reason = "replaced"
                    dropped.append(stale)
                self._interims[job.owner] = job
                while len(self._interims) > self._max_interims:
                    _, oldest = self._interims.popitem(last=False)
                    oldest.drop_reason = "overflow"
                    dropped.append(oldest)
            self.interims_dropped += len(dropped)
            self._cond.notify()
        if dropped_spec is not None:
            dropped.append(dropped_spec)
        for d in dropped:
            settle(d.future, None)
        return job.future

    def _queue_final(self, job: AsrJob) -> None:
        """Append to the owner's FIFO (the owner joins the turns if it had none); report a backlog."""
        queue = self._finals.get(job.owner)
        if queue is None:
            queue = self._finals[job.owner] = deque()
            if job.owner not in self._speculative:  # else it holds a turn already
                self._turns.append(job.owner)  # a newly waiting owner is served after one round
        queue.append(job)
        self._final_count += 1
        if len(queue) > self._max_owner_finals and job.owner not in self._over_bound:
            self._over_bound.add(job.owner)
            self.finals_backlog_reports += 1
            log.warning(
                "ASR owner %r has %d finals queued (bound %d): it is sending audio faster than the "
                "model transcribes it; its finals will be late, other owners' are not",
                job.owner, len(queue), self._max_owner_finals,
            )

    def _pop_turn(self, dropped: list[AsrJob]) -> AsrJob | None:
        """The next job by turns: the first owner in line gives its oldest final (else its
        speculative final) and goes to the back if it has more. None: that job was dropped."""
        owner = self._turns.popleft()
        queue = self._finals.get(owner)
        job: AsrJob | None
        if queue:
            job = queue.popleft()
            self._final_count -= 1
            if not queue:
                del self._finals[owner]
                self._over_bound.discard(owner)
            if not job.future.set_running_or_notify_cancel():
                job = None  # cancelled by its awaiter: it gives up its turn
        else:
            spec = self._speculative.pop(owner)
            job = spec if self._runnable(spec, dropped) else None
        if owner in self._finals or owner in self._speculative:
            self._turns.append(owner)
        return job

    def _forget_idle(self) -> None:
        """Keep only the owners that submitted work in the last `active_s`."""
        horizon = self._clock() - self._active_s
        for owner in [o for o, t in self._last_submit.items() if t < horizon]:
            del self._last_submit[owner]

    def _final_coming(self) -> bool:
        """Whether an owner is active but has nothing queued: it is speaking, its final is coming."""
        return any(o not in self._finals and o not in self._speculative for o in self._last_submit)

    # -- worker side ---------------------------------------------------------------------------

    def next_batch(self, max_batch: int = 1, timeout: float | None = None) -> list[AsrJob] | None:
        """Block until jobs are available; returns a batch of one kind, or None once closed and
        drained of finals (or [] on timeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            dropped: list[AsrJob] = []
            with self._cond:
                batch = self._take(max_batch, dropped)
                if not batch and not dropped:
                    if self._closed and not self._final_count:
                        return None
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return []
                    self._cond.wait(remaining)
                    continue
                self._running += len(batch)
            for d in dropped:
                settle(d.future, None)
            if batch:
                now = time.monotonic()
                for job in batch:
                    job.started_at = now
                return batch

    def _take(self, max_batch: int, dropped: list[AsrJob]) -> list[AsrJob]:
        """Finals and speculative finals by turns (same decoding); else interims."""
        batch: list[AsrJob] = []
        self._forget_idle()
        if self._turns:
            served: set[str] = set()
            while self._turns and len(batch) < max_batch:
                owner = self._turns[0]
                if owner in served and self._final_coming():
                    break  # one slot each: someone's final is on its way
                job = self._pop_turn(dropped)
                if job is not None:
                    batch.append(job)
                    served.add(owner)
        if batch:
            return batch
        while self._interims and len(batch) < max_batch:
            _, job = self._interims.popitem(last=False)
            if self._runnable(job, dropped):
                batch.append(job)
        return batch

    def _runnable(self, job: AsrJob, dropped: list[AsrJob]) -> bool:
        """Claim a droppable job for running, or drop it (cancelled / stale)."""
        if job.future.cancelled():
            job.drop_reason = "cancelled"
            self._count_drop(job)
            return False
        if job.is_stale is not None and _safe_call(job.is_stale):
            job.drop_reason = "stale"
            self._count_drop(job)
            dropped.append(job)
            return False
        return job.future.set_running_or_notify_cancel()

    def _count_drop(self, job: AsrJob) -> None:
        if job.kind is JobKind.SPECULATIVE:
            self.speculative_dropped += 1
        else:
            self.interims_dropped += 1

    def complete(
        self,
        batch: list[AsrJob],
        results: Sequence[AsrResult] | None = None,
        exc: BaseException | None = None,
    ) -> None:
        """Workers call this with a batch's results, in job order (or the error that failed it).

        The batch is counted as completed *before* its futures settle: whoever sees a result
        also sees it in `snapshot()` (counting afterwards let an awaiter that had its final read
        finals_completed one short)."""
        if exc is None and (results is None or len(results) != len(batch)):
            got = "no" if results is None else len(results)
            exc = RuntimeError(f"backend returned {got} results for {len(batch)} jobs")
        values: list[AsrResult | None] = list(results) if exc is None and results is not None else [None] * len(batch)
        with self._cond:
            self._running -= len(batch)
            for job in batch:
                self.completed[job.kind] += 1
            self._cond.notify_all()
        for job, value in zip(batch, values, strict=True):
            settle(job.future, value, exc)

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop accepting jobs; pending interims are dropped, pending finals still run."""
        with self._cond:
            self._closed = True
            dropped = list(self._interims.values()) + list(self._speculative.values())
            self._interims.clear()
            self._speculative.clear()
            self._turns = deque(o for o in self._turns if o in self._finals)
            for d in dropped:
                d.drop_reason = "closed"
            for d in dropped:
                self._count_drop(d)
            self._cond.notify_all()
        for d in dropped:
            settle(d.future, None)

    @property
    def closed(self) -> bool:
        return self._closed

    def snapshot(self) -> dict[str, Any]:
        with self._cond:
            return {
                "pending_finals": self._final_count,
                "owners_with_finals": len(self._finals),
                "active_owners": len(self._last_submit),  # submitted in the last active_s (as of the last batch)
                "owners_over_bound": len(self._over_bound),
                "finals_backlog_reports": self.finals_backlog_reports,
                "pending_interims": len(self._interims),
                "pending_speculative": len(self._speculative),
                "running": self._running,
                "finals_submitted": self.submitted[JobKind.FINAL],
                "interims_submitted": self.submitted[JobKind.INTERIM],
                "finals_completed": self.completed[JobKind.FINAL],
                "interims_completed": self.completed[JobKind.INTERIM],
                "interims_dropped": self.interims_dropped,
                "speculative_submitted": self.submitted[JobKind.SPECULATIVE],
                "speculative_completed": self.completed[JobKind.SPECULATIVE],
                "speculative_dropped": self.speculative_dropped,
                "oldest_final_wait_s": max(
                    (time.monotonic() - q[0].submitted_at for q in self._finals.values() if q), default=0.0
                ),
            }

    def pending_finals(self, owner: str | None = None) -> int:
        with self._cond:
            if owner is None:
                return self._final_count
            return len(self._finals.get(owner, ()))

    def owner_backlog(self, owner: str) -> OwnerBacklog:
        """How much final work `owner` has queued (for reports and transport backpressure)."""
        with self._cond:
            queue = self._finals.get(owner, ())
            return OwnerBacklog(len(queue), sum(len(j.audio) for j in queue) / SAMPLE_RATE)


def settle(future: Future[AsrResult | None], result: AsrResult | None = None, exc: BaseException | None = None) -> None:
    """Complete a future unless it is already done (e.g. cancelled by its awaiter)."""
    if future.done():
        return
    try:
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
    except Exception:  # InvalidStateError: lost a race with cancel()
        pass


def _safe_call(fn: Callable[[], bool]) -> bool:
    try:
        return bool(fn())
    except Exception:  # a broken staleness check must not kill a worker
        return False
