"""Did the audio arrive as it was sent? Aligns a received recording with the reference it came from.

The reference's first `span_s` of speech is cut into `chunk_s` chunks; each chunk is located in the
received audio by normalised cross-correlation. Audio that passed unchanged has every chunk at the
same offset; time-stretching (WebRTC's jitter buffer inserting or removing samples) moves the
offset from chunk to chunk, and lost or garbled audio leaves chunks that match nowhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from roomscribe.client.audio_files import read_wav

#: A chunk counts as found when its normalised cross-correlation peak reaches this (Opus-coded
#: speech that arrived intact scores 0.6–1.0; the 0.8 of earlier drafts missed quiet chunks).
MATCH = 0.6


@dataclass(frozen=True)
class Alignment:
    offsets_ms: list[float]  # where each found chunk sits in the received audio, minus where it was sent
    chunks: int  # chunks with speech in the reference span
    found: int  # of those, the ones located in the received audio
    scores: tuple[float, ...] = ()  # each chunk's best match (1.0: identical; a concealed packet dips it)

    @property
    def weakest(self) -> float:
        """The worst chunk's match: where audio was lost or concealed even though its timing held."""
        return min(self.scores) if self.scores else 0.0

    @property
    def drift_ms(self) -> float:
        """How far the offsets spread: 0 for audio that was neither stretched nor compressed."""
        return max(self.offsets_ms) - min(self.offsets_ms) if self.offsets_ms else float("inf")

    def intact(self, *, max_drift_ms: float = 3.0, min_found: float = 0.9) -> bool:
        """Nearly every chunk found, all at one offset (a stretch moves it by a pitch period, ≥ 3 ms)."""
        return self.found >= min_found * self.chunks and self.drift_ms <= max_drift_ms


def mono_float(path: str | Path, rate: int = 16000) -> np.ndarray:
    """A WAV file as mono float32 at `rate`."""
    audio = read_wav(path)
    x = audio.samples.astype(np.float32).reshape(-1, audio.channels).mean(axis=1) / 32768.0
    return soxr.resample(x, audio.sample_rate, rate) if audio.sample_rate != rate else x


def align(
    reference: np.ndarray,
    received: np.ndarray,
    rate: int = 16000,
    *,
    span_s: float = 3.0,
    chunk_s: float = 0.1,
    reach_s: float = 0.3,
) -> Alignment:
    """Locate each chunk of the reference's first `span_s` of speech in `received` (mono float, same
    rate). The first chunk found anchors the rest: each later one is looked for within `reach_s` of
    the previous offset, so a similar sound elsewhere in the recording cannot stand in for it."""
    loud = np.flatnonzero(np.abs(reference) > 0.01)
    if loud.size == 0:
        raise ValueError("the reference is silent")
    onset, size, reach = int(loud[0]), int(chunk_s * rate), int(reach_s * rate)
    rec = received.astype(np.float64)
    energy = np.convolve(rec**2, np.ones(size), mode="valid")
    offsets: list[float] = []
    scores: list[float] = []
    chunks = 0
    anchor: int | None = None  # received index minus reference index of the last chunk found
    for start in range(onset, min(onset + int(span_s * rate), len(reference) - size + 1), size):
        chunk = reference[start : start + size].astype(np.float64)
        if np.std(chunk) < 1e-3:  # a pause: nothing to locate
            continue
        chunks += 1
        if anchor is None:
            lo, hi = 0, len(rec)
        else:
            lo, hi = max(0, start + anchor - reach), min(len(rec), start + anchor + reach + size)
        if hi - lo < size:
            continue
        corr = np.correlate(rec[lo:hi], chunk, mode="valid")
        score = corr / (np.sqrt(energy[lo : hi - size + 1]) * np.linalg.norm(chunk) + 1e-12)
        best = int(np.argmax(score))
        scores.append(float(score[best]))
        if score[best] >= MATCH:
            anchor = lo + best - start
            offsets.append(1000.0 * anchor / rate)
    return Alignment(offsets_ms=offsets, chunks=chunks, found=len(offsets), scores=tuple(scores))
