"""Reconnect delays: exponential backoff with full jitter, capped, for a bounded number of attempts."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """`delay(n)` for attempt n (0-based) is uniform in [base·2ⁿ·(1-jitter), base·2ⁿ], capped at `cap`.

    `attempts` is how many reconnect attempts are made before giving up (None: forever).
    `jitter` is the fraction of the delay that is randomised (1.0 = "full jitter", 0 = none).
    """

    base_s: float = 0.25
    cap_s: float = 5.0
    attempts: int | None = 20
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.cap_s < self.base_s:
            raise ValueError("backoff needs 0 < base_s <= cap_s")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1")
        if self.attempts is not None and self.attempts < 0:
            raise ValueError("attempts must not be negative")

    def ceiling(self, attempt: int) -> float:
        """The largest delay attempt `attempt` may wait."""
        return min(self.cap_s, self.base_s * 2.0 ** min(attempt, 62))

    def delay(self, attempt: int) -> float:
        """The delay before attempt `attempt`: the ceiling less a random share of up to `jitter` of it."""
        high = self.ceiling(attempt)
        return high - self.rng.uniform(0.0, high * self.jitter)

    def allows(self, attempt: int) -> bool:
        """Whether attempt number `attempt` (0-based) may still be made."""
        return self.attempts is None or attempt < self.attempts
