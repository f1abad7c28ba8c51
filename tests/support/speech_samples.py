"""Helpers for tests that stream real speech: sample paths and transcripts, WER (the bench's
normaliser), PCM framing."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from roomscribe.bench.corpus import EXAMPLE_TRANSCRIPTS
from roomscribe.bench.first_words import printed_finals
from roomscribe.bench.wer import normalise, wer
from roomscribe.common.package_data import sample_audio

ROOT = Path(__file__).resolve().parents[2]
JFK = sample_audio("jfk.wav")
LIBRI = sample_audio("libri_61-70968-0000.wav")
JFK_TEXT = EXAMPLE_TRANSCRIPTS[JFK.name]
LIBRI_TEXT = EXAMPLE_TRANSCRIPTS[LIBRI.name]
__all__ = ["JFK", "JFK_TEXT", "LIBRI", "LIBRI_TEXT", "normalise", "pcm_frames", "printed_finals_text", "silence", "wer"]


def pcm_frames(samples: np.ndarray, sample_rate: int = 16000, frame_ms: int = 20) -> list[bytes]:
    step = sample_rate * frame_ms // 1000
    data = samples.astype("<i2")
    return [data[i : i + step].tobytes() for i in range(0, len(data), step)]


def silence(seconds: float, sample_rate: int = 16000) -> np.ndarray:
    return np.zeros(int(seconds * sample_rate), dtype=np.int16)


def printed_finals_text(stdout: str) -> str:
    """The finals `roomscribe demo` / `roomscribe push` printed, joined."""
    return " ".join(printed_finals(stdout))
