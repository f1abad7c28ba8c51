"""Where speech starts and ends inside a clip (the bench's ground truth for latency).

The rule: 10 ms frames, RMS level in dBFS; a frame is speech when it is above
max(peak − 40 dB, noise floor + 12 dB), the noise floor being the 10th percentile of frame levels.
Onset = start of the first speech frame; end = end of the last one. So the true end of an utterance
is the clip's end minus its trailing silence (the Asterisk prompts are studio recordings with
near-digital silence, where this is exact to ~10 ms). Clips with loud non-speech tails (JFK's
crowd) carry hand-marked bounds instead (`Clip.speech_s`).
"""

from __future__ import annotations

import numpy as np

from roomscribe.common.audio import SAMPLE_RATE

FRAME_S = 0.010
REL_PEAK_DB = 40.0
ABOVE_FLOOR_DB = 12.0


def frame_levels_db(samples: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
    """RMS level (dBFS) of each whole 10 ms frame of int16 mono samples."""
    step = int(rate * FRAME_S)
    n = len(samples) // step
    if n == 0:
        return np.zeros(0)
    frames = samples[: n * step].astype(np.float64).reshape(n, step) / 32768.0
    return 20.0 * np.log10(np.sqrt((frames**2).mean(axis=1)) + 1e-9)


def speech_bounds(samples: np.ndarray, rate: int = SAMPLE_RATE) -> tuple[float, float]:
    """(onset, end) of speech in seconds from the clip's start; the whole clip if nothing stands out."""
    levels = frame_levels_db(samples, rate)
    duration = len(samples) / rate
    if levels.size == 0:
        return 0.0, duration
    threshold = max(levels.max() - REL_PEAK_DB, np.percentile(levels, 10) + ABOVE_FLOOR_DB)
    loud = np.flatnonzero(levels > threshold)
    if loud.size == 0:
        return 0.0, duration
    return float(loud[0] * FRAME_S), float(min(duration, (loud[-1] + 1) * FRAME_S))
