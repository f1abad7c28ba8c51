"""Turns a stream of per-window VAD probabilities into utterance boundaries.

Pure state machine (no audio, no model): positions are in 16 kHz samples of session audio.
- Speech *starts* at the first window ≥ threshold, confirmed once `min_speech_s` of windows
  ≥ threshold were seen before `silence_hangover_s` of silence (otherwise discarded).
- Speech *ends* ("silence") once windows have stayed below the threshold for `silence_hangover_s`
  since the first window < neg_threshold (Silero's hysteresis); the end is where that silence began.
- At `max_utterance_s` the utterance is cut ("max_length") at the quietest window of the last
  `max_cut_lookback_s` (or, with `max_cut_rule="longest_pause"`, in the middle of its longest run of
  windows below the negative threshold), and a new utterance continues from the cut.
- `finish()` ends an open utterance ("stop").
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass

from .config import PipelineConfig
from .vad import WINDOW


class State(enum.Enum):
    IDLE = "idle"
    PENDING = "pending"  # speech seen, not yet confirmed
    SPEECH = "speech"


@dataclass(frozen=True)
class SpeechStart:
    sample: int  # where speech began
    continuation: bool = False  # True after a max_length cut


@dataclass(frozen=True)
class SpeechEnd:
    sample: int  # where speech ended (start of the trailing silence, or the cut)
    reason: str  # "silence" | "max_length" | "stop"
    audio_end: int  # audio up to here belongs to the utterance


Boundary = SpeechStart | SpeechEnd


class Segmenter:
    """Feed it one probability per 512-sample window, in order."""

    def __init__(self, config: PipelineConfig, window: int = WINDOW, rate: int = 16000) -> None:
        self.cfg = config
        self.window = window
        self.threshold = config.vad_threshold
        self.neg_threshold = (
            config.vad_neg_threshold
            if config.vad_neg_threshold is not None
            else max(config.vad_threshold - 0.15, 0.01)
        )
        self.hangover_w = max(1, math.ceil(config.silence_hangover_s * rate / window - 1e-9))
        self.min_speech_w = max(1, math.ceil(config.min_speech_s * rate / window - 1e-9))
        self.max_w = max(2, int(config.max_utterance_s * rate / window))
        self.lookback_w = max(1, int(config.max_cut_lookback_s * rate / window))
        self.state = State.IDLE
        self.index = 0  # windows seen
        self.start_w = 0  # first window of the current (candidate) utterance
        self.speech_w = 0  # windows ≥ threshold in the candidate
        self.silence_start_w: int | None = None
        self._recent: deque[float] = deque(maxlen=self.lookback_w)

    @property
    def in_speech(self) -> bool:
        return self.state is State.SPEECH

    @property
    def in_trailing_silence(self) -> bool:
        """Speech is open but currently silent: an end (and a final) may be imminent."""
        return self.state is State.SPEECH and self.silence_start_w is not None

    @property
    def trailing_silence_start(self) -> int | None:
        """Where the current trailing silence began (samples), or None outside one."""
        if self.state is State.SPEECH and self.silence_start_w is not None:
            return self.silence_start_w * self.window
        return None

    @property
    def position(self) -> int:
        """Samples covered by the windows seen so far."""
        return self.index * self.window

    def push(self, prob: float) -> list[Boundary]:
        i = self.index
        self.index += 1
        self._recent.append(prob)
        out: list[Boundary] = []
        loud = prob >= self.threshold
        quiet = prob < self.neg_threshold
        if self.state is State.IDLE and loud:
            self.state = State.PENDING
            self.start_w, self.speech_w, self.silence_start_w = i, 0, None
        if self.state is State.PENDING:
            if loud:
                self.speech_w += 1
                self.silence_start_w = None
            elif quiet and self.silence_start_w is None:
                self.silence_start_w = i
            if self.speech_w >= self.min_speech_w:
                self.state = State.SPEECH
                out.append(SpeechStart(self.start_w * self.window))
            elif self.silence_start_w is not None and i + 1 - self.silence_start_w >= self.hangover_w:
                self.state = State.IDLE
            return out
        if self.state is State.SPEECH:
            if loud:
                self.silence_start_w = None
            elif quiet and self.silence_start_w is None:
                self.silence_start_w = i
            if self.silence_start_w is not None and i + 1 - self.silence_start_w >= self.hangover_w:
                out.append(
                    SpeechEnd(self.silence_start_w * self.window, "silence", (i + 1) * self.window)
                )
                self.state = State.IDLE
                self.silence_start_w = None
            elif i + 1 - self.start_w >= self.max_w:
                out.extend(self._cut(i))
        return out

    def _cut(self, i: int) -> list[Boundary]:
        """Max length reached at window i: end at the quietest recent point, continue after it."""
        if self.silence_start_w is not None:
            # Already trailing off: end where the silence began; new speech re-triggers.
            end = self.silence_start_w * self.window
            self.state = State.IDLE
            self.silence_start_w = None
            return [SpeechEnd(end, "max_length", (i + 1) * self.window)]
        recent = list(self._recent)
        first_w = i + 1 - len(recent)
        pause = longest_pause(recent, self.neg_threshold) if self.cfg.max_cut_rule == "longest_pause" else None
        # The middle of the longest pause, else the quietest window of the lookback (latest on
        # ties); never the utterance's first window.
        best = pause if pause is not None else min(range(len(recent)), key=lambda k: (recent[k], -k))
        cut_w = max(first_w + best, self.start_w + 1)
        cut = cut_w * self.window
        self.start_w = cut_w
        self.silence_start_w = None
        return [SpeechEnd(cut, "max_length", cut), SpeechStart(cut, continuation=True)]

    def finish(self) -> list[Boundary]:
        """End of stream: close an open utterance, discard an unconfirmed one."""
        out: list[Boundary] = []
        if self.state is State.SPEECH:
            end = self.position if self.silence_start_w is None else self.silence_start_w * self.window
            out.append(SpeechEnd(end, "stop", self.position))
        self.state = State.IDLE
        self.silence_start_w = None
        return out


def longest_pause(probs: list[float], below: float) -> int | None:
    """The middle index of the longest run of `probs` under `below` (the latest on ties), or None."""
    best: tuple[int, int] | None = None  # (length, middle)
    run = 0
    for k, p in enumerate(probs):
        run = run + 1 if p < below else 0
        if run and (best is None or run >= best[0]):
            best = (run, k - run // 2)
    return None if best is None else best[1]
