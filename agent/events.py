"""Events the transcription pipeline emits, independent of any transport.

Times are seconds of session audio (16 kHz samples received so far / 16000), measured
from the first sample fed to the pipeline. The control plane adds `seq` and serialises them.

Order within one utterance: SpeechStarted, InterimTranscript*, FinalTranscript?, SpeechEnded.
A FinalTranscript is emitted only when the utterance produced text (noise yields none);
SpeechEnded always closes a started utterance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Word:
    """One recognised word with its session-audio times."""

    word: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class SpeechStarted:
    utterance_id: str
    start: float
    participant: str | None = None


@dataclass(frozen=True)
class InterimTranscript:
    """The whole current text of the utterance; replaces the previous interim."""

    utterance_id: str
    text: str
    start: float
    end: float
    participant: str | None = None


@dataclass(frozen=True)
class FinalTranscript:
    utterance_id: str
    text: str
    start: float
    end: float
    reason: str  # "silence" | "max_length" | "stop"
    words: tuple[Word, ...] | None = None
    participant: str | None = None
    language: str | None = None  # detected ("auto" sessions)
    language_probability: float | None = None
    #: Wall seconds from end-of-speech detection to this event (metrics; not sent, not compared).
    latency_s: float | None = field(default=None, compare=False)


@dataclass(frozen=True)
class SpeechEnded:
    utterance_id: str
    end: float
    participant: str | None = None


@dataclass(frozen=True)
class PipelineNotice:
    """Something the client should know that is not a transcript (e.g. dropped interims under load)."""

    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


PipelineEvent = SpeechStarted | InterimTranscript | FinalTranscript | SpeechEnded | PipelineNotice
