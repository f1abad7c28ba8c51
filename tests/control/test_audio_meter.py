"""The ws audio meter's rule, without sockets: a burst at once, then at most `rate`× real time."""

from __future__ import annotations

import pytest

from control.audio_meter import AudioMeter

pytestmark = pytest.mark.timeout(10)


def test_real_time_audio_never_waits() -> None:
    meter = AudioMeter(rate=1.5, burst_s=10.0, now=0.0)
    for i in range(1, 3001):  # 60 s of 20 ms frames, each arriving as it is recorded
        assert meter.reserve(0.02, now=i * 0.02) == 0.0
    assert meter.held_frames == 0


def test_the_burst_goes_through_at_once_then_the_rate_applies() -> None:
    meter = AudioMeter(rate=1.5, burst_s=10.0, now=0.0)
    delays = [meter.reserve(0.02, now=0.0) for _ in range(500)]  # 10 s of buffered audio at once
    assert delays == [0.0] * 500
    # The next second of audio is owed: it may be taken once 1 s / 1.5 of wall time has passed.
    assert meter.reserve(1.0, now=0.0) == pytest.approx(1.0 / 1.5)
    # Frames reserved behind it wait behind it.
    assert meter.reserve(0.3, now=0.0) == pytest.approx(1.3 / 1.5)
    assert meter.held_frames == 2


def test_a_flood_is_held_to_the_rate() -> None:
    meter = AudioMeter(rate=2.0, burst_s=1.0, now=0.0)
    now = 0.0
    for _ in range(100):  # 10 s of audio sent as fast as the server takes it
        now += meter.reserve(0.1, now)
    # 1 s of burst, then 9 s of audio at 2× real time.
    assert now == pytest.approx(4.5)


def test_the_bucket_refills_up_to_the_burst_only() -> None:
    meter = AudioMeter(rate=1.5, burst_s=2.0, now=0.0)
    assert meter.reserve(2.0, now=0.0) == 0.0
    assert meter.available(now=100.0) == pytest.approx(2.0)  # a long pause saves up no more than the burst
    assert meter.reserve(2.0, now=100.0) == 0.0
    assert meter.reserve(0.3, now=100.0) == pytest.approx(0.2)


def test_rate_zero_meters_nothing() -> None:
    meter = AudioMeter(rate=0.0, burst_s=0.0, now=0.0)
    assert not meter.enabled
    assert all(meter.reserve(1.0, now=0.0) == 0.0 for _ in range(100))
