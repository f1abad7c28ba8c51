"""Streaming Silero VAD (the v6 ONNX model bundled with faster-whisper).

The model takes windows of 64 context samples + 512 new samples at 16 kHz and carries an LSTM
state (h, c). The library's own call resets that state on every call; `StreamingVad` keeps the
state and the last 64 samples across calls, so its probabilities equal the whole-file output
exactly however the audio is split.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from roomscribe.common.audio import SAMPLE_RATE

if TYPE_CHECKING:
    import onnxruntime

WINDOW = 512  # samples per probability at 16 kHz (32 ms)
CONTEXT = 64
WINDOW_S = WINDOW / SAMPLE_RATE


@functools.lru_cache(maxsize=1)
def _session() -> onnxruntime.InferenceSession:
    """The process-wide ONNX session (onnxruntime sessions are safe to share)."""
    from faster_whisper.vad import get_vad_model

    return get_vad_model().session


def whole_file_probs(audio: np.ndarray) -> np.ndarray:
    """Reference: faster-whisper's own one-shot VAD over a whole 16 kHz buffer (zero padded)."""
    from faster_whisper.vad import get_vad_model

    audio = np.asarray(audio, dtype=np.float32)
    padded = np.pad(audio, (0, (-audio.shape[0]) % WINDOW))
    if padded.shape[0] == 0:
        return np.zeros(0, dtype=np.float32)
    return np.asarray(get_vad_model()(padded), dtype=np.float32).reshape(-1)


class StreamingVad:
    """Feeds 16 kHz float32 audio of any length; returns one speech probability per 512 samples."""

    def __init__(self) -> None:
        self._session = _session()
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self.windows = 0  # windows processed so far

    def process(self, audio: np.ndarray) -> np.ndarray:
        """Probabilities for every complete window now available (may be empty)."""
        audio = np.asarray(audio, dtype=np.float32)
        if self._pending.size:
            audio = np.concatenate([self._pending, audio])
        n = audio.shape[0] // WINDOW
        self._pending = audio[n * WINDOW :].copy()
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        wins = audio[: n * WINDOW].reshape(n, WINDOW)
        contexts = np.concatenate([self._context[None, :], wins[:-1, -CONTEXT:]], axis=0)
        batch = np.ascontiguousarray(np.concatenate([contexts, wins], axis=1))
        out, self._h, self._c = self._session.run(
            None, {"input": batch, "h": self._h, "c": self._c}
        )
        self._context = wins[-1, -CONTEXT:].copy()
        self.windows += n
        return np.asarray(out, dtype=np.float32).reshape(-1)

    def flush(self) -> np.ndarray:
        """Zero-pad and process the incomplete last window, as the whole-file call does."""
        if not self._pending.size:
            return np.zeros(0, dtype=np.float32)
        return self.process(np.zeros(WINDOW - self._pending.size, dtype=np.float32))
