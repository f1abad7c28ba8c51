"""How fast a ws session may send audio: a token bucket counted in seconds of audio.

The bucket holds up to `burst_s` seconds of audio and refills at `rate` seconds of audio per
second of wall time. A real-time client never empties it; a client catching up after an outage
sends up to `burst_s` at once, then at `rate`× real time. A frame the bucket cannot cover yet is
not refused: `reserve` says how long to wait before taking it, and the caller stops reading the
socket for that long (backpressure). Pure: the caller passes the clock.
"""

from __future__ import annotations


class AudioMeter:
    """A token bucket in seconds of audio; `rate <= 0` meters nothing."""

    def __init__(self, rate: float, burst_s: float, now: float) -> None:
        self.rate = rate
        self.burst_s = max(0.0, burst_s)
        self._tokens = self.burst_s
        self._at = now
        #: Wall seconds the meter has asked callers to wait, in total.
        self.held_s = 0.0
        #: Frames that had to wait.
        self.held_frames = 0

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def available(self, now: float) -> float:
        """Seconds of audio that may be taken at `now` without waiting (negative: already owed)."""
        self._refill(now)
        return self._tokens

    def reserve(self, seconds: float, now: float) -> float:
        """Take `seconds` of audio arriving at `now`; returns the wall seconds to wait before using it.

        Reservations queue: a frame reserved while an earlier one still waits waits behind it.
        """
        if not self.enabled:
            return 0.0
        self._refill(now)
        self._tokens -= seconds
        if self._tokens >= 0:
            return 0.0
        delay = -self._tokens / self.rate
        self.held_s += delay
        self.held_frames += 1
        return delay

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(self.burst_s, self._tokens + (now - self._at) * self.rate)
            self._at = now
