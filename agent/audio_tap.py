"""A debug tap: the audio a LiveKit track delivered, exactly as the pipeline received it, as WAV.

Compare it with what the client published to see whether the words changed on the way
(`ROOMSCRIBE_DEBUG_AUDIO_DIR`). Off by default; never used for recordings (see the issue on
recordings for that).
"""

from __future__ import annotations

import itertools
import re
import time
import wave
from pathlib import Path

import numpy as np

_tap_ids = itertools.count(1)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:64] or "_"


class WavTap:
    """Writes int16 frames to `<dir>/<room>-<identity>-<n>.wav`; the format is fixed by the first frame."""

    def __init__(self, directory: str | Path, room: str, identity: str) -> None:
        self.path = Path(directory) / f"{_safe(room)}-{_safe(identity)}-{time.time_ns() // 1_000_000}-{next(_tap_ids)}.wav"
        self._wav: wave.Wave_write | None = None
        self._format: tuple[int, int] | None = None

    def write(self, samples: np.ndarray, sample_rate: int, channels: int) -> None:
        """Append one frame (interleaved int16); a frame in another format than the first is skipped."""
        if self._wav is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._wav = wave.open(str(self.path), "wb")  # noqa: SIM115 - stays open across writes; close() closes it
            self._wav.setnchannels(channels)
            self._wav.setsampwidth(2)
            self._wav.setframerate(sample_rate)
            self._format = (sample_rate, channels)
        if (sample_rate, channels) == self._format:
            self._wav.writeframes(np.asarray(samples, dtype=np.int16).tobytes())

    def close(self) -> None:
        if self._wav is not None:
            self._wav.close()
            self._wav = None
