"""Streaming conversion of arbitrary PCM frames to 16 kHz mono float32."""

from __future__ import annotations

import numpy as np
import soxr

from roomscribe.common.audio import SAMPLE_RATE as TARGET_RATE


def to_mono_float32(samples: np.ndarray, channels: int = 1) -> np.ndarray:
    """Interleaved int16/float32 samples (1-D, or 2-D frames×channels) → mono float32 in [-1, 1]."""
    x = np.asarray(samples)
    if x.dtype == np.int16:
        x = x.astype(np.float32) * (1.0 / 32768.0)
    elif np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32, copy=False)
    else:
        raise ValueError(f"samples must be int16 or float, got {x.dtype}")
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    if x.ndim == 2:
        if x.shape[1] != channels:
            raise ValueError(f"2-D frame has {x.shape[1]} channels, expected {channels}")
    elif x.ndim == 1:
        if x.shape[0] % channels:
            raise ValueError(f"{x.shape[0]} samples is not a multiple of {channels} channels")
        x = x.reshape(-1, channels)
    else:
        raise ValueError(f"samples must be 1-D or 2-D, got {x.ndim}-D")
    if channels == 1:
        return np.ascontiguousarray(x[:, 0])
    mono: np.ndarray = x.mean(axis=1, dtype=np.float32)
    return mono


class StreamingResampler:
    """Converts a stream of frames to 16 kHz mono float32, keeping filter state between frames.

    The input rate may change mid-stream (the filter is then flushed and rebuilt). 16 kHz input
    is passed through untouched. soxr HQ has ~30-40 ms of internal delay; `flush()` drains it.
    """

    def __init__(self, quality: str = "HQ") -> None:
        self._quality = quality
        self._rate: int | None = None
        self._stream: soxr.ResampleStream | None = None

    def process(self, samples: np.ndarray, sample_rate: int, channels: int = 1) -> np.ndarray:
        """Convert one frame; returns the 16 kHz samples available so far (possibly empty)."""
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        mono = to_mono_float32(samples, channels)
        out: list[np.ndarray] = []
        if sample_rate != self._rate:
            out.append(self.flush())
            self._rate = sample_rate
            if sample_rate != TARGET_RATE:
                self._stream = soxr.ResampleStream(
                    sample_rate, TARGET_RATE, 1, dtype="float32", quality=self._quality
                )
        if self._stream is None:
            out.append(mono)
        else:
            out.append(self._stream.resample_chunk(mono))
        return out[0] if len(out) == 1 else np.concatenate(out)

    def flush(self) -> np.ndarray:
        """Drain the filter's delayed samples (end of stream or rate change)."""
        stream, self._stream = self._stream, None
        self._rate = None
        if stream is None:
            return np.zeros(0, dtype=np.float32)
        tail: np.ndarray = stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True).astype(np.float32)
        return tail
