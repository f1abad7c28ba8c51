"""When is a received WebRTC audio stream steady enough to transcribe?

A subscriber's audio goes through libwebrtc's jitter buffer (NetEq) before `rtc.AudioStream` sees
it. NetEq starts every stream with a target delay of about 80 ms, then lowers it as it learns how
regular the packets are; to move its buffer to the target it time-stretches the audio: it inserts
samples ("deceleration") or removes whole pitch periods ("acceleration"). Speech stretched by
20–50 ms in its first second garbles Whisper ("And so my fellow" → "And so am i fell"). The
stretching is in the receiver, so it happens with any LiveKit server; the Python SDK offers no
setting to turn it off, but the stream's `inbound-rtp` statistics count every stretched sample.

`SettleWatch` reads those counters: the stream is steady once NetEq has stretched nothing for
`quiet_s` and its buffer is not above the level where NetEq accelerates (its decision logic:
max(target, 3/4 target + 20 ms)). Pure logic: the agent polls the statistics and feeds them in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

#: WebRTC decodes Opus at 48 kHz: the jitter buffer's sample counters are at this rate.
NETEQ_RATE = 48_000


@dataclass(frozen=True)
class JitterBufferStats:
    """Cumulative counters of one received audio stream (W3C `RTCInboundRtpStreamStats`)."""

    emitted: int = 0  # samples played out of the jitter buffer
    delay_s: float = 0.0  # sum over emitted samples of the time each spent in the buffer
    target_s: float = 0.0  # sum over emitted samples of the buffer's target delay
    accelerated: int = 0  # samples removed to shrink the buffer
    decelerated: int = 0  # samples inserted to grow it
    concealed: int = 0  # samples invented for missing packets

    @property
    def stretched(self) -> int:
        """Samples NetEq added or removed (time-stretching, not concealment)."""
        return self.accelerated + self.decelerated

    @classmethod
    def from_rtc(cls, stats: Iterable[Any]) -> JitterBufferStats | None:
        """The inbound audio stream's counters from `RemoteAudioTrack.get_stats()`, if present."""
        for item in stats:
            if not item.HasField("inbound_rtp"):
                continue
            inbound = item.inbound_rtp.inbound
            return cls(
                emitted=int(inbound.jitter_buffer_emitted_count),
                delay_s=float(inbound.jitter_buffer_delay),
                target_s=float(inbound.jitter_buffer_target_delay),
                accelerated=int(inbound.removed_samples_for_acceleration),
                decelerated=int(inbound.inserted_samples_for_deceleration),
                concealed=int(inbound.concealed_samples),
            )
        return None


def accelerate_above_ms(target_ms: float) -> float:
    """The buffer level above which NetEq accelerates (WebRTC's DecisionLogic: its high limit)."""
    return max(target_ms, 0.75 * target_ms + 20.0)


@dataclass(frozen=True)
class Settled:
    """The verdict: after `after_s` the stream was steady (or the watch gave up waiting)."""

    steady: bool
    after_s: float
    stretched_ms: float  # time-stretching before the verdict
    buffer_ms: float  # the jitter buffer's delay in the last window
    target_ms: float


class SettleWatch:
    """Feed successive stats (`update`) from the stream's first frame on; returns a `Settled`
    verdict once, when the jitter buffer has been quiet for `quiet_s` (at least `min_s` after the
    start), or after `max_s` with `steady=False`."""

    def __init__(self, *, quiet_s: float = 0.5, min_s: float = 0.5, max_s: float = 4.0) -> None:
        self.quiet_s = quiet_s
        self.min_s = min_s
        self.max_s = max_s
        self._start: float | None = None
        self._prev: JitterBufferStats | None = None
        self._first: JitterBufferStats | None = None
        self._quiet_since: float | None = None
        self._buffer_ms = 0.0
        self._target_ms = 0.0
        self.verdict: Settled | None = None

    def update(self, stats: JitterBufferStats | None, now: float) -> Settled | None:
        """Take one sample of the counters at time `now` (seconds; None: no statistics this time,
        which counts as not quiet); the verdict when it is reached."""
        if self.verdict is not None:
            return None
        if self._start is None:
            self._start = self._quiet_since = now
        if stats is None or self._prev is None:
            self._quiet_since = now
            if stats is not None:
                self._prev = self._first = stats
        else:
            prev, self._prev = self._prev, stats
            emitted = stats.emitted - prev.emitted
            if emitted > 0:
                self._buffer_ms = 1000.0 * (stats.delay_s - prev.delay_s) / emitted
                self._target_ms = 1000.0 * (stats.target_s - prev.target_s) / emitted
            if stats.stretched != prev.stretched or emitted <= 0 or self._buffer_ms > accelerate_above_ms(self._target_ms):
                self._quiet_since = now
        elapsed = now - self._start
        quiet = self._quiet_since is not None and now - self._quiet_since >= self.quiet_s
        if (quiet and elapsed >= self.min_s) or elapsed >= self.max_s:
            self.verdict = Settled(
                steady=quiet,
                after_s=elapsed,
                stretched_ms=1000.0 * (self._prev.stretched - self._first.stretched) / NETEQ_RATE
                if self._prev is not None and self._first is not None
                else 0.0,
                buffer_ms=self._buffer_ms,
                target_ms=self._target_ms,
            )
            return self.verdict
        return None
