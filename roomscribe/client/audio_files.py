"""Reading audio files for streaming (PCM16 WAV, any rate and channel count)."""

from __future__ import annotations

import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class PcmAudio:
    """Interleaved int16 samples."""

    samples: np.ndarray  # shape (frames * channels,), int16
    sample_rate: int
    channels: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.channels / self.sample_rate

    def frames(self, frame_ms: int = 20) -> Iterator[bytes]:
        """Little-endian PCM16 chunks of `frame_ms` (the last one may be shorter)."""
        step = self.sample_rate * frame_ms // 1000 * self.channels
        data = self.samples.astype("<i2", copy=False)
        for start in range(0, len(data), step):
            yield data[start : start + step].tobytes()


def read_wav(path: str | Path) -> PcmAudio:
    """Read a 16-bit PCM WAV file; raise ValueError with the reason for anything else."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2 or wav.getcomptype() != "NONE":
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported (convert with: sox IN -b 16 OUT.wav)")
        raw = wav.readframes(wav.getnframes())
        return PcmAudio(np.frombuffer(raw, dtype="<i2"), wav.getframerate(), wav.getnchannels())
