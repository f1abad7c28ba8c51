"""The shared speech-recognition engine: a Whisper backend behind a priority scheduler.

One `AsrEngine` per process serves every pipeline. Model calls run on worker threads
(ctranslate2 releases the GIL), so the event loop never blocks. The engine is not bound to an
event loop: `transcribe()` may be awaited from any loop, and results travel back through
`concurrent.futures.Future`s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from roomscribe.common.audio import SAMPLE_RATE
from roomscribe.common.languages import AUTO, ENGLISH_ONLY, ModelLanguages

from .config import AsrConfig
from .models import ModelInfo, describe, resolve_model
from .priority import lower_current_thread_priority, run_in_low_priority_thread
from .prompting import DecoderPrompt
from .scheduler import AsrJob, AsrScheduler, JobKind

if TYPE_CHECKING:
    from faster_whisper import WhisperModel  # untyped (Any to mypy): named for the reader

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AsrWord:
    word: str
    start: float  # seconds from the start of the job's audio
    end: float
    probability: float


@dataclass(frozen=True)
class AsrSegment:
    text: str
    start: float
    end: float
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    temperature: float
    words: tuple[AsrWord, ...] = ()


@dataclass(frozen=True)
class AsrResult:
    """Raw model output for one job (before the pipeline's text guards)."""

    segments: tuple[AsrSegment, ...]
    audio_s: float
    infer_s: float  # wall time of the model call
    queued_s: float = 0.0  # wall time waiting in the scheduler
    extra: dict[str, Any] = field(default_factory=dict)
    language: str | None = None  # detected (the job asked for "auto"), else None
    language_probability: float | None = None

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments).strip()


class AsrBackend(Protocol):
    """What the engine needs from a model. `transcribe_batch` may run one call per job today and
    one batched model call tomorrow; it is called from worker threads."""

    def load(self) -> None: ...

    def transcribe_batch(self, jobs: Sequence[AsrJob]) -> list[AsrResult]: ...


def cpu_threads_for(config: AsrConfig) -> int:
    """Threads per model call: the configured number, or (auto) the usable cores split evenly
    among the workers (CTranslate2's own default of 4 oversubscribes small machines)."""
    if config.cpu_threads > 0:
        return config.cpu_threads
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, config.workers))


class WhisperBackend:
    """faster-whisper (CTranslate2) backend."""

    def __init__(self, config: AsrConfig) -> None:
        self.config = config
        self.model: WhisperModel | None = None
        self.info: ModelInfo | None = None  # the loaded model's directory and languages

    def loaded_model(self) -> WhisperModel:
        """The model; raises if `load()` has not run yet."""
        if self.model is None:
            raise RuntimeError("backend not loaded: call load() first")
        return self.model

    def load(self) -> None:
        from faster_whisper import WhisperModel

        path = Path(self.config.model_path) if self.config.model_path else resolve_model(self.config.model)
        self.info = describe(path, self.config.model_path or self.config.model)
        self.model = WhisperModel(
            str(path),
            device="cpu",
            compute_type=self.config.compute_type,
            cpu_threads=cpu_threads_for(self.config),
            num_workers=max(1, self.config.workers),
            local_files_only=True,
        )

    def transcribe_batch(self, jobs: Sequence[AsrJob]) -> list[AsrResult]:
        return [self._transcribe(job) for job in jobs]

    def language_of(self, job: AsrJob) -> str | None:
        """The language to decode `job` in; None: detect it."""
        language = job.language or self.config.language
        return None if language == AUTO else language

    def _transcribe(self, job: AsrJob) -> AsrResult:
        assert self.model is not None, "backend not loaded"
        cfg = self.config
        final = job.kind.decodes_as_final
        word_ts = final and job.word_timestamps
        prompt = job.decoder_prompt  # keyterms and prompt, and for a final the context
        t0 = time.perf_counter()
        language = self.language_of(job)
        segments, info = self.model.transcribe(
            job.audio,
            language=language,
            task=job.task,
            beam_size=cfg.beam_size,
            best_of=1,
            temperature=list(cfg.final_temperatures) if final else [0.0],
            compression_ratio_threshold=cfg.compression_ratio_threshold,
            log_prob_threshold=cfg.log_prob_threshold,
            no_speech_threshold=cfg.no_speech_threshold,
            condition_on_previous_text=False,
            without_timestamps=not word_ts,
            word_timestamps=word_ts,
            vad_filter=False,
            # The same inputs the adaptive backend builds its prompt from (agent/prompting.py).
            initial_prompt=prompt.initial_prompt if prompt else None,
            hotwords=prompt.hotwords if prompt else None,
        )
        out = []
        for s in segments:  # the generator does the decoding
            words = tuple(
                AsrWord(w.word, float(w.start), float(w.end), float(w.probability))
                for w in (s.words or ())
            )
            out.append(
                AsrSegment(
                    text=s.text,
                    start=float(s.start),
                    end=float(s.end),
                    avg_logprob=float(s.avg_logprob),
                    no_speech_prob=float(s.no_speech_prob),
                    compression_ratio=float(s.compression_ratio),
                    temperature=float(s.temperature if s.temperature is not None else 0.0),
                    words=words,
                )
            )
        infer_s = time.perf_counter() - t0
        detected = language is None and self.loaded_model().model.is_multilingual
        return AsrResult(
            segments=tuple(out),
            audio_s=len(job.audio) / SAMPLE_RATE,
            infer_s=infer_s,
            language=info.language if detected else None,
            language_probability=float(info.language_probability) if detected else None,
        )


def make_backend(config: AsrConfig) -> AsrBackend:
    """The backend selected by `config.encoder_window`."""
    if config.encoder_window == "full":
        return WhisperBackend(config)
    if config.encoder_window == "adaptive":
        from .ct2backend import ShortWindowBackend

        return ShortWindowBackend(config)
    raise ValueError(f"unknown encoder_window {config.encoder_window!r}")


class AsrEngine:
    """Process-wide transcription service with prioritised, bounded scheduling.

    `transcribe()` returns the model result, or None when an interim was dropped (replaced by a
    newer one from the same owner, stale at dispatch, or over the global bound). Finals always run.
    """

    def __init__(self, config: AsrConfig | None = None, backend: AsrBackend | None = None) -> None:
        self.config = config or AsrConfig()
        self.backend: AsrBackend = backend or make_backend(self.config)
        self.scheduler = AsrScheduler(self.config.max_pending_interims)
        self.max_batch = max(1, self.config.max_batch)
        self._threads: list[threading.Thread] = []
        self._started = False
        self._busy_s = 0.0
        self._decoded_audio_s = 0.0
        self._batches = 0  # model calls (a batch is one call)
        self._lock = threading.Lock()

    async def start(self) -> None:
        """Load the model off the event loop and start the worker threads."""
        if self._started:
            return
        await asyncio.to_thread(self._load)
        self._start_workers()

    def start_sync(self) -> None:
        """Blocking variant of `start()` for non-async callers (scripts, test fixtures)."""
        if self._started:
            return
        self._load()
        self._start_workers()

    def _load(self) -> None:
        """Load the model from a lower-priority thread: the model's thread pools inherit it."""
        run_in_low_priority_thread(self.backend.load, self.config.nice, "asr-load")

    def _start_workers(self) -> None:
        self._started = True
        for i in range(max(1, self.config.workers)):
            t = threading.Thread(target=self._worker, name=f"asr-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    async def close(self) -> None:
        """Stop accepting work, let queued finals finish, and join the workers."""
        self.scheduler.close()
        threads, self._threads = self._threads, []

        def join_all() -> None:
            for t in threads:
                t.join()

        await asyncio.to_thread(join_all)

    def close_sync(self) -> None:
        self.scheduler.close()
        threads, self._threads = self._threads, []
        for t in threads:
            t.join()

    @property
    def started(self) -> bool:
        return self._started

    @property
    def languages(self) -> ModelLanguages:
        """What the loaded model can do (English only until a model is loaded)."""
        info = self.backend.info if isinstance(self.backend, WhisperBackend) else None
        return info.capabilities if info is not None else ENGLISH_ONLY

    def submit(
        self,
        audio: np.ndarray,
        *,
        final: bool,
        owner: str,
        word_timestamps: bool = False,
        is_stale: Callable[[], bool] | None = None,
        speculative: bool = False,
        language: str | None = None,
        task: str = "transcribe",
        prompt: DecoderPrompt | None = None,
        context: str = "",
    ) -> AsrJob:
        """Thread-safe, non-blocking: queue a job and return it (`job.future` settles with an
        `AsrResult`, or None if the interim was dropped — then `job.drop_reason` says why).

        `speculative=True` (with `final=True`) queues a droppable final below real finals and above
        interims; cancel it with `job.future.cancel()` while it is still queued. `language` (a code,
        or "auto"; None: the configured one) and `task` say how to decode it; `prompt`: keyterms
        and a prompt that bias this job's decoding (agent/prompting.py).
        interims; cancel it with `job.future.cancel()` while it is still queued.
        `context` (finals only): text said before this audio, given to the decoder as its prompt.
        """
        if not self._started:
            raise RuntimeError("AsrEngine.start() was not called")
        if final:
            kind = JobKind.SPECULATIVE if speculative else JobKind.FINAL
        else:
            kind = JobKind.INTERIM
        job = AsrJob(
            kind=kind,
            owner=owner,
            audio=np.ascontiguousarray(audio, dtype=np.float32),
            word_timestamps=word_timestamps,
            prompt=prompt or None,
            is_stale=None if kind is JobKind.FINAL else is_stale,
            context=context if final else "",
            language=language,
            task=task,
        )
        self.scheduler.submit(job)
        return job

    async def transcribe(
        self,
        audio: np.ndarray,
        *,
        final: bool,
        owner: str,
        word_timestamps: bool = False,
        is_stale: Callable[[], bool] | None = None,
        prompt: DecoderPrompt | None = None,
    ) -> AsrResult | None:
        """Queue a job and await its result (None = interim dropped)."""
        job = self.submit(
            audio, final=final, owner=owner, word_timestamps=word_timestamps, is_stale=is_stale, prompt=prompt
        )
        return await asyncio.wrap_future(job.future)

    def pending_finals(self, owner: str | None = None) -> int:
        return self.scheduler.pending_finals(owner)

    @property
    def stats(self) -> dict[str, Any]:
        s = self.scheduler.snapshot()
        s["busy_s"] = round(self._busy_s, 3)
        s["batches"] = self._batches
        s["decoded_audio_s"] = round(self._decoded_audio_s, 3)
        return s

    def _worker(self) -> None:
        lower_current_thread_priority(self.config.nice)
        while True:
            batch = self.scheduler.next_batch(self.max_batch)
            if batch is None:
                return
            if not batch:
                continue
            t0 = time.perf_counter()
            results: list[AsrResult] | None = None
            error: BaseException | None = None
            try:
                results = self.backend.transcribe_batch(batch)
            except BaseException as exc:  # every failure is reported to every awaiter
                log.exception("ASR batch of %d failed", len(batch))
                error = exc
            else:
                now = time.monotonic()
                results = [
                    _with_queue_time(res, (job.started_at or now) - job.submitted_at)
                    for job, res in zip(batch, results, strict=False)
                ]
            # Account for the call before anyone can see its results.
            with self._lock:
                self._busy_s += time.perf_counter() - t0
                self._batches += 1
                self._decoded_audio_s += sum(len(job.audio) for job in batch) / SAMPLE_RATE
            self.scheduler.complete(batch, results, error)


def _with_queue_time(res: AsrResult, queued_s: float) -> AsrResult:
    return dataclasses.replace(res, queued_s=queued_s)
