"""A trimmed, growable buffer of 16 kHz session audio addressed by absolute sample index."""

from __future__ import annotations

import numpy as np


class AudioHistory:
    """Holds samples [start, end) of the session; the owner trims what it no longer needs."""

    def __init__(self, initial_capacity: int = 16000 * 4) -> None:
        self._buf = np.zeros(max(1, initial_capacity), dtype=np.float32)
        self._off = 0  # index in _buf of the sample `start`
        self._len = 0
        self.start = 0  # absolute index of the oldest kept sample

    @property
    def end(self) -> int:
        """Absolute index one past the newest sample (= samples received so far)."""
        return self.start + self._len

    def __len__(self) -> int:
        return self._len

    def append(self, x: np.ndarray) -> None:
        n = x.shape[0]
        if n == 0:
            return
        if self._off + self._len + n > self._buf.shape[0]:
            need = self._len + n
            if need * 2 > self._buf.shape[0]:
                new = np.zeros(max(need * 2, self._buf.shape[0] * 2), dtype=np.float32)
            else:
                new = self._buf  # compact in place
            new[: self._len] = self._buf[self._off : self._off + self._len]
            self._buf, self._off = new, 0
        self._buf[self._off + self._len : self._off + self._len + n] = x
        self._len += n

    def slice(self, a: int, b: int) -> np.ndarray:
        """A copy of samples [a, b), clamped to what is kept."""
        a = max(a, self.start)
        b = min(b, self.end)
        if b <= a:
            return np.zeros(0, dtype=np.float32)
        return self._buf[self._off + a - self.start : self._off + b - self.start].copy()

    def trim_before(self, sample: int) -> None:
        """Forget samples before `sample`."""
        drop = min(max(0, sample - self.start), self._len)
        self._off += drop
        self._len -= drop
        self.start += drop
