"""The alignment check itself: it passes audio that arrived unchanged and catches stretched or
truncated audio (the LiveKit path's test relies on it)."""

from __future__ import annotations

import numpy as np
import pytest

from roomscribe.bench.alignment import align, mono_float
from speech_samples import JFK

pytestmark = pytest.mark.timeout(60)
RATE = 16000


@pytest.fixture(scope="module")
def jfk() -> np.ndarray:
    return mono_float(JFK)


def test_delayed_copy_aligns_with_no_drift(jfk: np.ndarray) -> None:
    received = np.concatenate([np.zeros(int(1.234 * RATE), dtype=np.float32), jfk])
    result = align(jfk, received)
    assert result.found == result.chunks > 20
    assert result.intact() and result.drift_ms < 1.0 and abs(result.offsets_ms[0] - 1234.0) < 1.0


def test_twenty_ms_removed_in_the_first_second_is_caught(jfk: np.ndarray) -> None:
    onset = int(np.flatnonzero(np.abs(jfk) > 0.01)[0])
    cut = onset + int(0.6 * RATE)
    received = np.concatenate([jfk[:cut], jfk[cut + int(0.02 * RATE) :]])  # what NetEq's "accelerate" does
    result = align(jfk, received)
    assert result.drift_ms >= 15.0 and not result.intact()


def test_truncated_start_is_caught(jfk: np.ndarray) -> None:
    onset = int(np.flatnonzero(np.abs(jfk) > 0.01)[0])
    received = jfk[onset + int(0.8 * RATE) :]  # the first words never arrived
    assert not align(jfk, received).intact()


def test_a_gap_in_the_middle_is_caught(jfk: np.ndarray) -> None:
    onset = int(np.flatnonzero(np.abs(jfk) > 0.01)[0])
    received = jfk.copy()
    received[onset + RATE : onset + 2 * RATE] = 0.0  # a second of the speech lost on the way
    assert not align(jfk, received).intact()
