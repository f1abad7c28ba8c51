"""One audio stream → transcription events.

frames → StreamingResampler (16 kHz mono) → StreamingVad (per 32 ms window) → Segmenter
(utterance boundaries) → AsrEngine jobs → text guards → events, emitted on the event loop in
order. Utterances never interleave in the event stream: the next utterance's SpeechStarted waits
until the previous one's SpeechEnded.

Jobs per utterance: an interim every `interim_interval_s` of speech (never while the speech is
trailing off), a *speculative* final as soon as `speculative_delay_s` of trailing silence is
seen (so the result is usually ready when the hangover ends the utterance; abandoned if speech
resumes, redone with the whole audio if unsure), else a final at the end of the utterance.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from roomscribe.common.audio import SAMPLE_RATE as RATE

from .asr import AsrEngine, AsrResult, AsrSegment
from .audiobuf import AudioHistory
from .config import PipelineConfig
from .events import (
    FinalTranscript,
    InterimTranscript,
    PipelineEvent,
    PipelineNotice,
    SpeechEnded,
    SpeechStarted,
    Word,
)
from .prompting import pipeline_prompt
from .resample import StreamingResampler
from .scheduler import AsrJob, JobKind
from .segmenter import Segmenter, SpeechEnd, SpeechStart, State
from .textguard import GuardConfig, clean_segments, clean_text
from .vad import WINDOW, StreamingVad

log = logging.getLogger(__name__)

_CHUNK = RATE // 2  # VAD/segment in ≤0.5 s pieces so one big feed() stays bounded
_LOAD_DROPS = ("replaced", "overflow")  # drop reasons that mean "the model is behind"
_pipeline_ids = itertools.count(1)


@dataclass(eq=False)
class _Utterance:
    id: str
    start: int  # speech start (samples)
    audio_start: int  # first sample sent to the model (pre-roll included)
    end: int | None = None  # set when the segmenter closes it
    audio_end: int = 0  # last sample sent with the final
    reason: str | None = None
    ended_wall: float | None = None
    next_interim_at: int = 0
    interim_seq: int = 0
    last_interim_seq: int = 0
    last_interim_text: str = ""
    held_interim: InterimTranscript | None = None
    spec_job: AsrJob | None = None  # speculative final for the current silence run
    spec_silence: int | None = None  # the silence start it was made for
    spec_token: object | None = None
    started_emitted: bool = False
    final_done: bool = False
    final_event: FinalTranscript | None = None
    final_task: asyncio.Task[None] | None = None
    redo_audio: np.ndarray | None = None  # model input for a real final after a speculative one


@dataclass(frozen=True)
class ResumePoint:
    """Where a fresh pipeline can take over a stream with the events this one would have emitted:
    pass `start_s` and `first_utterance` to it and feed it the audio that follows."""

    audio_s: float  # session seconds fed so far (the time of the next sample)
    next_utterance: int  # the number of the next utterance id ("u<n>")


class TranscriptionPipeline:
    """Streaming transcription of one participant's audio. `feed()` is cheap and never waits for
    the model; results arrive through `on_event` (called on the event loop, in order).

    `start_s` and `first_utterance` continue a stream another pipeline began (see `resume_point()`):
    event times are session seconds from `start_s`, utterance ids count from `first_utterance`.
    """

    def __init__(
        self,
        engine: AsrEngine,
        config: PipelineConfig | None,
        on_event: Callable[[PipelineEvent], None],
        participant: str | None = None,
        *,
        start_s: float = 0.0,
        first_utterance: int = 1,
    ) -> None:
        self.engine = engine
        self.cfg = config or PipelineConfig()
        self.on_event = on_event
        self.participant = participant
        self.owner = f"pipeline-{next(_pipeline_ids)}"
        self._guard = GuardConfig(
            drop_no_speech_prob=self.cfg.drop_no_speech_prob,
            drop_avg_logprob=self.cfg.drop_avg_logprob,
            hard_no_speech_prob=self.cfg.hard_no_speech_prob,
            min_avg_logprob=self.cfg.min_avg_logprob,
        )
        self._resampler = StreamingResampler()
        self._vad = StreamingVad()
        self._seg = Segmenter(self.cfg)
        self._audio = AudioHistory()
        self._pre_roll = int(self.cfg.pre_roll_s * RATE)
        self._interim_step = max(WINDOW, int(self.cfg.interim_interval_s * RATE))
        self._min_interim = max(WINDOW, int(self.cfg.min_interim_audio_s * RATE))  # the first interim
        self._spec_delay = int(self.cfg.speculative_delay_s * RATE)
        self._lead_in = np.zeros(int(self.cfg.lead_in_s * RATE), dtype=np.float32)
        self._prompt = pipeline_prompt(self.cfg)  # keyterms / prompt for every job (None: none)
        self._t0 = round(start_s * RATE)  # session samples before the first one fed here
        self._next_utt = first_utterance
        self._open: deque[_Utterance] = deque()  # not yet closed in the event stream, in order
        self._current: _Utterance | None = None  # the utterance the segmenter has open
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._received = 0  # 16 kHz samples produced from fed audio (excludes finish() padding)
        #: Called on the event loop with every piece of 16 kHz mono float32 audio the pipeline hears
        #: (after resampling, before any padding): a session's recording (control/recording.py).
        self.audio_tap: Callable[[np.ndarray], None] | None = None
        self._latencies: deque[float] = deque(maxlen=1000)
        self._last_drop_notice_at: float | None = None
        self._drops_since_notice = 0
        self._backlog_warned = False
        self._context = ""  # the session's recent finals (see PipelineConfig.final_context_chars)
        self._stats = {
            "utterances": 0,
            "finals": 0,
            "empty_finals": 0,
            "interims": 0,
            "interims_requested": 0,
            "interims_dropped": 0,  # replaced by a newer one / over the bound: the model is behind
            "interims_skipped": 0,  # stale at dispatch or superseded by the final: nothing lost
            "asr_errors": 0,
            "speculative_used": 0,  # finals whose decode started before the end was declared
            "speculative_wasted": 0,  # speculative decodes that ran but whose speech resumed
            "speculative_redone": 0,  # speculative results not trusted: a real final was run
        }

    # -- public API ----------------------------------------------------------------------------

    def feed(self, samples: np.ndarray, sample_rate: int, channels: int = 1) -> None:
        """Add one frame of interleaved int16/float32 audio. Call on the event loop."""
        if self._closed:
            raise RuntimeError("pipeline is closed")
        x = self._resampler.process(samples, sample_rate, channels)
        self._received += x.shape[0]
        if self.audio_tap is not None and x.shape[0]:
            self.audio_tap(x)
        self._ingest(x)

    def resume_point(self) -> ResumePoint | None:
        """Where another pipeline could continue this stream, or None while an utterance is open,
        being confirmed or waiting for its final (what follows is then not yet accounted for)."""
        if self._open or self._seg.state is not State.IDLE:
            return None
        return ResumePoint(self._sec(self._audio.end), self._next_utt)

    def queued_final_audio_s(self) -> float:
        """Seconds of audio in this pipeline's finals waiting for the model (for transport backpressure)."""
        return self.engine.scheduler.owner_backlog(self.owner).audio_s

    async def finish(self) -> None:
        """Finalise the open utterance (reason "stop") and wait until every utterance's final and
        SpeechEnded were emitted."""
        if self._closed:
            return
        tail = self._resampler.flush()
        self._received += tail.shape[0]
        if self.audio_tap is not None and tail.shape[0]:
            self.audio_tap(tail)
        self._ingest(tail)
        # Pad to a whole VAD window with silence so the last partial window is judged too.
        partial = self._audio.end % WINDOW
        if partial:
            self._ingest(np.zeros(WINDOW - partial, dtype=np.float32))
        for b in self._seg.finish():
            self._on_boundary(b)
        finals = [u.final_task for u in self._open if u.final_task is not None]
        if finals:
            await asyncio.gather(*finals, return_exceptions=True)
        self._drain()

    async def aclose(self) -> None:
        """Stop: cancel outstanding work. Started utterances still get their SpeechEnded."""
        if self._closed:
            return
        self._closed = True
        for u in self._open:
            if u.spec_job is not None:
                u.spec_job.future.cancel()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        while self._open:
            u = self._open.popleft()
            if u.started_emitted:
                end = u.end if u.end is not None else self._seg.position
                self._emit(SpeechEnded(u.id, self._sec(end), self.participant))
        self._current = None

    @property
    def stats(self) -> dict[str, float]:
        s: dict[str, float] = dict(self._stats)
        s["audio_seconds"] = self._received / RATE
        s["pending_finals"] = sum(1 for u in self._open if u.end is not None and not u.final_done)
        lat = sorted(self._latencies)
        if lat:
            s["final_latency_p50_s"] = round(lat[len(lat) // 2], 4)
            s["final_latency_max_s"] = round(lat[-1], 4)
        return s

    @property
    def final_latencies(self) -> list[float]:
        """Wall seconds from end-of-speech detection to the final event, per final (recent)."""
        return list(self._latencies)

    # -- audio path ----------------------------------------------------------------------------

    def _ingest(self, x: np.ndarray) -> None:
        for i in range(0, x.shape[0], _CHUNK):
            piece = x[i : i + _CHUNK]
            self._audio.append(piece)
            for p in self._vad.process(piece):
                for b in self._seg.push(float(p)):
                    self._on_boundary(b)
            self._update_speculation()
            self._maybe_interim()
            keep = self._seg.position - self._pre_roll - WINDOW * 2
            if self._current is not None:
                keep = min(keep, self._current.audio_start)
            if self._seg.state is not State.IDLE:
                keep = min(keep, self._seg.start_w * WINDOW - self._pre_roll)
            self._audio.trim_before(keep)

    def _on_boundary(self, b: SpeechStart | SpeechEnd) -> None:
        if isinstance(b, SpeechStart):
            audio_start = b.sample if b.continuation else max(0, b.sample - self._pre_roll)
            started = _Utterance(
                id=f"u{self._next_utt}",
                start=b.sample,
                audio_start=max(audio_start, self._audio.start),
                next_interim_at=b.sample + self._min_interim,
            )
            self._next_utt += 1
            self._stats["utterances"] += 1
            self._current = started
            self._open.append(started)
            self._drain()
            return
        u = self._current
        if u is None:
            return
        self._current = None
        u.end, u.reason, u.ended_wall = b.sample, b.reason, time.perf_counter()
        u.audio_end = min(b.audio_end, self._audio.end)
        audio = self._model_input(u.audio_start, u.audio_end)
        job = self._take_speculation(u)
        if job is not None:
            u.redo_audio = audio  # kept in case the speculative result is not trusted
        elif self._waits_for_context(u):
            u.final_task = self._spawn(self._run_final_after_context(u, audio))
            self._check_backlog()
            return
        else:
            job = self._submit_final(u, audio)
        if job is None:
            u.final_done = True
            self._drain()
            return
        u.final_task = self._spawn(self._run_final(u, job))
        self._check_backlog()

    def _submit_final(self, u: _Utterance, audio: np.ndarray) -> AsrJob | None:
        try:
            return self.engine.submit(
                audio,
                final=True,
                owner=self.owner,
                word_timestamps=self.cfg.word_timestamps,
                language=self.cfg.language,
                task=self.cfg.task,
                prompt=self._prompt,
                context=self._context,
            )
        except RuntimeError as exc:  # engine closed or not started
            self._stats["asr_errors"] += 1
            self._notice("asr_error", f"cannot transcribe: {exc}", {"utterance_id": u.id})
            return None

    # -- speculative finals ----------------------------------------------------------------------

    def _update_speculation(self) -> None:
        """Start a speculative final when trailing silence begins; abandon it if speech resumes."""
        u = self._current
        if u is None:
            return
        seg = self._seg
        silence = seg.trailing_silence_start
        if u.spec_job is not None and u.spec_silence != silence:
            self._abandon_speculation(u)
        if (
            not self.cfg.speculative_finals
            or silence is None
            or u.spec_silence == silence
            or seg.position - silence < self._spec_delay
            # Behind on its own finals: this one would wait for them anyway (others' finals do
            # not matter: it takes this session's turn, see agent/scheduler.py).
            or self.engine.pending_finals(self.owner) > 0
            or self._waits_for_context(u)
        ):
            return
        token = object()
        try:
            job = self.engine.submit(
                self._speculative_input(u.audio_start, silence),
                final=True,
                speculative=True,
                owner=self.owner,
                word_timestamps=self.cfg.word_timestamps,
                is_stale=lambda: u.spec_token is not token,
                language=self.cfg.language,
                task=self.cfg.task,
                prompt=self._prompt,
                context=self._context,
            )
        except RuntimeError:
            return
        u.spec_job, u.spec_silence, u.spec_token = job, silence, token

    def _speculative_input(self, audio_start: int, silence: int) -> np.ndarray:
        """What the final will hear if the silence that began at `silence` lasts: the audio so far,
        then, for the rest of the hangover the segmenter has not seen yet, noise at the level of the
        latest silence heard (comfort noise). Whisper's text depends on how much silence follows
        the last word (tiny.en garbled "And so my fellow Americans" when it heard 0.1 s of it, not
        0.3 s), and whether the speculative or the real final is used depends on timing: both must
        hear as much. Measured on LiveKit-received JFK at 8 VAD-window phases × 6 recordings:
        exact 43/48 unpadded, 48/48 padded this way (39/48 replaying the heard silence, which
        repeats the last word's soft ending)."""
        heard = self._model_input(audio_start, self._seg.position)
        missing = silence + self._seg.hangover_w * self._seg.window - self._seg.position
        if missing <= 0:
            return heard
        latest = self._audio.slice(max(silence, self._seg.position - WINDOW), self._seg.position)
        level = float(np.sqrt(np.mean(np.square(latest, dtype=np.float64)))) if latest.size else 0.0
        noise = np.random.default_rng(silence).standard_normal(missing).astype(np.float32) * level
        return np.concatenate([heard, noise])

    def _abandon_speculation(self, u: _Utterance) -> None:
        job, u.spec_job, u.spec_token = u.spec_job, None, None
        u.spec_silence = None
        # cancel() has no effect once the decode runs; its result is then ignored (wasted work).
        if job is not None and not job.future.cancel():
            self._stats["speculative_wasted"] += 1

    def _take_speculation(self, u: _Utterance) -> AsrJob | None:
        """At the end of an utterance: the speculative job, if it heard the same speech and is
        already running (a queued one is cancelled; a real final then takes its place)."""
        job = u.spec_job
        if job is None:
            return None
        if u.spec_silence == u.end and not job.future.cancel():
            u.spec_job, u.spec_token = None, None
            self._stats["speculative_used"] += 1
            return job
        self._abandon_speculation(u)
        return None

    def _maybe_interim(self) -> None:
        u = self._current
        if not self.cfg.interims or u is None or self._seg.in_trailing_silence:
            return
        pos = self._seg.position
        if pos < u.next_interim_at:
            return
        u.next_interim_at = pos + self._interim_step
        audio = self._model_input(u.audio_start, pos)
        u.interim_seq += 1
        seg = self._seg

        def is_stale() -> bool:  # read from a worker thread at dispatch time
            return u.end is not None or (self._current is u and seg.in_trailing_silence)

        try:
            job = self.engine.submit(
                audio, final=False, owner=self.owner, is_stale=is_stale, prompt=self._prompt,
                language=self.cfg.language, task=self.cfg.task,
            )  # fmt: skip
        except RuntimeError:  # engine closed: the final reports the error
            return
        self._stats["interims_requested"] += 1
        self._spawn(self._run_interim(u, u.interim_seq, job, pos))

    def _model_input(self, a: int, b: int) -> np.ndarray:
        """Session audio [a, b) with the lead-in silence prepended."""
        audio = self._audio.slice(a, b)
        return np.concatenate([self._lead_in, audio]) if self._lead_in.size else audio

    # -- results -------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run_interim(self, u: _Utterance, seq: int, job: AsrJob, end_sample: int) -> None:
        try:
            res: AsrResult | None = await asyncio.wrap_future(job.future)
        except Exception:
            log.exception("interim transcription failed")
            self._stats["asr_errors"] += 1
            return
        if res is None:
            self._on_interim_dropped(job.drop_reason)
            return
        if u.end is not None or seq <= u.last_interim_seq:
            return  # the final is on its way, or a newer interim already landed
        text = clean_text(res.segments, self._guard)
        if not text or text == u.last_interim_text:
            return
        u.last_interim_seq, u.last_interim_text = seq, text
        ev = InterimTranscript(u.id, text, self._sec(u.start), self._sec(end_sample), self.participant)
        if u.started_emitted and self._open and self._open[0] is u:
            self._stats["interims"] += 1
            self._emit(ev)
        else:
            u.held_interim = ev

    async def _run_final(self, u: _Utterance, job: AsrJob) -> None:
        try:
            res: AsrResult | None = await asyncio.wrap_future(job.future)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("final transcription failed")
            self._stats["asr_errors"] += 1
            self._notice("asr_error", f"transcription failed: {exc}", {"utterance_id": u.id})
            res = None
        self._log_result(u, job, res)
        if job.kind is JobKind.SPECULATIVE and not self._trust_speculative(res):
            # Dropped after all, or unsure (it heard only a short tail): redo with all the audio.
            self._stats["speculative_redone"] += 1
            audio, u.redo_audio = u.redo_audio, None
            redo = self._submit_final(u, audio) if audio is not None else None
            res = await asyncio.wrap_future(redo.future) if redo is not None else None
            self._log_result(u, redo, res)
        assert u.end is not None and u.reason is not None
        text = ""
        words = None
        if res is not None:
            segs = clean_segments(res.segments, self._guard)
            text = clean_text(segs, self._guard)
            if self.cfg.word_timestamps and text:
                words = self._session_words(u, segs)
        if text:
            end = self._sec(max(u.end, u.audio_start + 1))
            u.final_event = FinalTranscript(
                u.id, text, self._sec(u.start), end, u.reason, words, self.participant,
                language=res.language if res is not None else None,
                language_probability=res.language_probability if res is not None else None,
            )
        else:
            self._stats["empty_finals"] += 1
        u.final_done = True
        self._drain()

    def _earlier_finals(self, u: _Utterance) -> list[asyncio.Task[None]]:
        """The final tasks of the utterances before `u` that are not done yet."""
        out = []
        for o in self._open:
            if o is u:
                break
            if not o.final_done and o.final_task is not None:
                out.append(o.final_task)
        return out

    def _waits_for_context(self, u: _Utterance) -> bool:
        """Whether `u`'s final submitted now would miss context: an earlier final is not done yet
        (with context on, finals run one after another, so the context never depends on timing)."""
        return self.cfg.final_context_chars > 0 and bool(self._earlier_finals(u))

    async def _run_final_after_context(self, u: _Utterance, audio: np.ndarray) -> None:
        """Submit `u`'s final once every earlier final is done (their text is its context)."""
        await asyncio.gather(*self._earlier_finals(u), return_exceptions=True)
        job = self._submit_final(u, audio)
        if job is None:
            u.final_done = True
            self._drain()
            return
        await self._run_final(u, job)

    def _remember(self, text: str) -> None:
        """Keep the last `final_context_chars` of the session's finals (whole words) as context."""
        limit = self.cfg.final_context_chars
        if limit <= 0:
            return
        joined = f"{self._context} {text.strip()}".strip()
        if len(joined) > limit:
            cut = joined[-limit:]
            joined = cut.split(" ", 1)[1] if " " in cut and not joined[-limit - 1].isspace() else cut
        self._context = joined.strip()

    def _log_result(self, u: _Utterance, job: AsrJob | None, res: AsrResult | None) -> None:
        if job is not None and res is not None and log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s %s %s (%.2f s audio): %r %s", self.owner, u.id, job.kind.value, res.audio_s,
                res.text,
                [(round(g.avg_logprob, 2), round(g.no_speech_prob, 2), g.temperature)
                 for g in res.segments],
            )

    def _trust_speculative(self, res: AsrResult | None) -> bool:
        if res is None:
            return False
        return all(
            seg.temperature == 0.0 and seg.avg_logprob >= self.cfg.speculative_min_logprob
            for seg in res.segments
        )

    def _session_words(self, u: _Utterance, segs: Sequence[AsrSegment]) -> tuple[Word, ...]:
        """Word times in session seconds, clamped to the utterance (the final's `start`..`end`: the
        model hears a little pre-roll before it, and Whisper's last word tends to run on into the
        silence after it)."""
        off = self._sec(u.audio_start - self._lead_in.size)
        assert u.end is not None
        lo, hi = self._sec(u.start), self._sec(max(u.end, u.audio_start + 1))
        out = []
        for seg in segs:
            for w in seg.words:
                start = min(max(off + w.start, lo), hi)
                end = min(max(off + w.end, start), hi)
                out.append(Word(w.word.strip(), round(start, 3), round(end, 3), w.probability))
        return tuple(out)

    # -- ordered emission ----------------------------------------------------------------------

    def _drain(self) -> None:
        """Emit whatever is ready, utterance by utterance."""
        while self._open:
            u = self._open[0]
            if not u.started_emitted:
                u.started_emitted = True
                self._emit(SpeechStarted(u.id, self._sec(u.start), self.participant))
                if u.held_interim is not None and u.end is None:
                    self._stats["interims"] += 1
                    self._emit(u.held_interim)
                u.held_interim = None
            if not u.final_done:
                return
            if u.final_event is not None:
                self._stats["finals"] += 1
                final = u.final_event
                self._remember(u.final_event.text)
                if u.ended_wall is not None:
                    self._latencies.append(time.perf_counter() - u.ended_wall)
                    final = dataclasses.replace(final, latency_s=self._latencies[-1])
                self._emit(final)
            end = u.end if u.end is not None else self._seg.position  # set before final_done; as in finish()
            self._emit(SpeechEnded(u.id, self._sec(end), self.participant))
            self._open.popleft()
            if self._backlog_warned and self.stats["pending_finals"] < self.cfg.max_pending_finals:
                self._backlog_warned = False

    def _sec(self, sample: int) -> float:
        """Session seconds of a sample position of this pipeline's audio."""
        return (self._t0 + sample) / RATE

    def _emit(self, ev: PipelineEvent) -> None:
        try:
            self.on_event(ev)
        except Exception:
            log.exception("on_event callback raised for %s", type(ev).__name__)

    # -- notices -------------------------------------------------------------------------------

    def _notice(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        d = {"participant": self.participant, **(details or {})}
        self._emit(PipelineNotice(code, message, d))

    def _on_interim_dropped(self, reason: str | None) -> None:
        if reason not in _LOAD_DROPS:
            self._stats["interims_skipped"] += 1
            return
        self._stats["interims_dropped"] += 1
        self._drops_since_notice += 1
        now = self._audio.end / RATE
        last = self._last_drop_notice_at
        if last is None or now - last >= self.cfg.drop_notice_interval_s:
            self._last_drop_notice_at = now
            self._notice(
                "interims_dropped",
                "transcription is behind; stale interim results were skipped",
                {
                    "dropped": self._drops_since_notice,
                    "dropped_total": self._stats["interims_dropped"],
                },
            )
            self._drops_since_notice = 0

    def _check_backlog(self) -> None:
        pending = self.stats["pending_finals"]
        if pending >= self.cfg.max_pending_finals and not self._backlog_warned:
            self._backlog_warned = True
            self._notice(
                "asr_backlog",
                "transcription is behind; finals are queued and will be late",
                {"pending_finals": pending},
            )
