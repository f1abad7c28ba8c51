"""SettleWatch: when a received stream's jitter buffer has stopped time-stretching the audio."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from livekit.rtc._proto import stats_pb2

from agent.jitter_buffer import NETEQ_RATE, JitterBufferStats, SettleWatch

pytestmark = pytest.mark.timeout(10)
STEP = 0.1  # the agent polls every 100 ms
PER_STEP = int(NETEQ_RATE * STEP)


def feed(watch: SettleWatch, steps: Sequence[tuple[int, int, float, float]]):
    """(accelerated, decelerated, buffer_ms, target_ms) per 100 ms step → the verdict and its step."""
    stats = JitterBufferStats()
    assert watch.update(stats, 0.0) is None
    for i, (acc, dec, buffer_ms, target_ms) in enumerate(steps, start=1):
        stats = JitterBufferStats(
            emitted=stats.emitted + PER_STEP,
            delay_s=stats.delay_s + buffer_ms / 1000 * PER_STEP,
            target_s=stats.target_s + target_ms / 1000 * PER_STEP,
            accelerated=stats.accelerated + acc,
            decelerated=stats.decelerated + dec,
        )
        verdict = watch.update(stats, i * STEP)
        if verdict is not None:
            return verdict, i
    return None, len(steps)


def test_start_up_stretching_then_quiet_settles_after_the_quiet_period() -> None:
    start_up = [(0, 960, 20, 80)] * 3 + [(480, 0, 60, 30)] * 5  # NetEq: grow to 80 ms, then shrink
    quiet = [(0, 0, 30, 25)] * 10
    verdict, step = feed(SettleWatch(quiet_s=0.5), start_up + quiet)
    assert verdict is not None and verdict.steady
    assert step == len(start_up) + 5  # 0.5 s after the last stretch
    assert verdict.stretched_ms == pytest.approx(1000 * (3 * 960 + 5 * 480) / NETEQ_RATE)


def test_a_buffer_above_its_target_is_not_steady_yet() -> None:
    verdict, step = feed(SettleWatch(quiet_s=0.5), [(0, 0, 70, 20)] * 6 + [(0, 0, 25, 20)] * 6)
    assert verdict is not None and verdict.steady and step == 11


def test_gives_up_at_the_limit_and_says_so() -> None:
    verdict, step = feed(SettleWatch(quiet_s=0.5, max_s=2.0), [(480, 0, 40, 20)] * 40)
    assert verdict is not None and not verdict.steady and step == 20


def test_reads_the_inbound_audio_counters_from_sdk_stats() -> None:
    item = stats_pb2.RtcStats()
    inbound = item.inbound_rtp.inbound
    inbound.jitter_buffer_emitted_count = 48000
    inbound.jitter_buffer_delay = 1.5
    inbound.jitter_buffer_target_delay = 1.0
    inbound.removed_samples_for_acceleration = 480
    inbound.inserted_samples_for_deceleration = 960
    inbound.concealed_samples = 96
    other = stats_pb2.RtcStats()
    other.codec.codec.mime_type = "audio/opus"
    stats = JitterBufferStats.from_rtc([other, item])
    assert stats == JitterBufferStats(48000, 1.5, 1.0, 480, 960, 96)
    assert stats.stretched == 1440 and JitterBufferStats.from_rtc([other]) is None


def test_without_statistics_it_gives_up_at_the_limit() -> None:
    watch = SettleWatch(max_s=1.0)
    verdicts = [watch.update(None, i * STEP) for i in range(12)]
    assert verdicts[:10] == [None] * 10
    verdict = verdicts[10]
    assert verdict is not None and not verdict.steady and verdict.stretched_ms == 0.0
