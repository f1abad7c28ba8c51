"""Session plans: real speech clips joined by silence, with the true speech bounds of each clip."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from roomscribe.bench.corpus import Clip
from roomscribe.bench.speech import speech_bounds
from roomscribe.client.audio_files import read_wav
from roomscribe.common.audio import SAMPLE_RATE


@dataclass(frozen=True)
class PlannedClip:
    """One clip placed in a session; all times are seconds of session audio."""

    clip: Clip
    start_s: float  # the clip's first sample
    onset_s: float  # true speech onset
    end_s: float  # true end of speech (clip end minus its trailing silence)


@dataclass(frozen=True)
class SessionPlan:
    """The audio of one session (16 kHz mono int16) and where each clip's speech is."""

    name: str
    audio: np.ndarray
    clips: tuple[PlannedClip, ...]

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    @property
    def speech_s(self) -> float:
        return sum(c.end_s - c.onset_s for c in self.clips)


def load_clip_audio(clip: Clip) -> np.ndarray:
    """A clip's samples; the bench streams 16 kHz mono, as the corpus and examples are."""
    audio = read_wav(clip.path)
    if audio.sample_rate != SAMPLE_RATE or audio.channels != 1:
        raise ValueError(f"{clip.path}: expected 16 kHz mono, got {audio.sample_rate} Hz × {audio.channels}")
    return audio.samples


def build_plan(name: str, clips: Sequence[Clip], *, gap_s: float = 1.0, lead_s: float = 0.5, tail_s: float = 1.5) -> SessionPlan:
    """`lead_s` of silence, the clips separated by `gap_s` of digital silence, then `tail_s`."""
    parts: list[np.ndarray] = [np.zeros(int(lead_s * SAMPLE_RATE), dtype=np.int16)]
    pos = len(parts[0])
    placed = []
    for i, clip in enumerate(clips):
        if i:
            parts.append(np.zeros(int(gap_s * SAMPLE_RATE), dtype=np.int16))
            pos += len(parts[-1])
        samples = load_clip_audio(clip)
        onset, end = clip.speech_s or speech_bounds(samples, SAMPLE_RATE)
        start = pos / SAMPLE_RATE
        placed.append(PlannedClip(clip, start, start + onset, start + end))
        parts.append(samples.astype(np.int16, copy=False))
        pos += len(samples)
    parts.append(np.zeros(int(tail_s * SAMPLE_RATE), dtype=np.int16))
    return SessionPlan(name, np.concatenate(parts), tuple(placed))


def pick_clips(clips: Sequence[Clip], count: int, *, seed: int, min_s: float = 0.8, max_s: float = 10.0) -> list[Clip]:
    """`count` clips of `min_s`–`max_s`, in a seeded random order; repeats only when the pool is
    too small (the examples fallback)."""
    pool = [c for c in clips if min_s <= c.duration_s <= max_s] or list(clips)
    order = list(pool)
    random.Random(seed).shuffle(order)
    return [order[i % len(order)] for i in range(count)]
