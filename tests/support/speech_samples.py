"""Helpers for tests that stream real speech: sample paths, WER, PCM framing."""

from __future__ import annotations

import re
from pathlib import Path

import jiwer
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
JFK = ROOT / "examples" / "audio" / "jfk.wav"
LIBRI = ROOT / "examples" / "audio" / "libri_61-70968-0000.wav"
JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
LIBRI_TEXT = "He began a confused complaint against the wizard who had vanished behind the curtain on the left."


def normalise(text: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed (the WER normaliser of the tests)."""
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def wer(reference: str, hypothesis: str) -> float:
    return jiwer.wer(normalise(reference), normalise(hypothesis))


def pcm_frames(samples: np.ndarray, sample_rate: int = 16000, frame_ms: int = 20) -> list[bytes]:
    step = sample_rate * frame_ms // 1000
    data = samples.astype("<i2")
    return [data[i : i + step].tobytes() for i in range(0, len(data), step)]


def silence(seconds: float, sample_rate: int = 16000) -> np.ndarray:
    return np.zeros(int(seconds * sample_rate), dtype=np.int16)
