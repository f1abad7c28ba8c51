"""Synthetic test signals (the dev-server latency bench's bursts; the dev-server tests use them too)."""

from __future__ import annotations

import math

import numpy as np


def tone(freq_hz: float, n: int, rate: int, amplitude: float = 0.5, start: int = 0) -> np.ndarray:
    """``n`` int16 samples of a sine starting at sample ``start``."""
    t = (np.arange(n) + start) / rate
    return (np.sin(2 * math.pi * freq_hz * t) * amplitude * 32767).astype(np.int16)
