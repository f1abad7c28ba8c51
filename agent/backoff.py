"""Exponential backoff with full jitter, for reconnect loops."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays base·2^n capped at `cap`, each drawn uniformly from [delay/2, delay] (jitter)."""

    base_s: float = 0.5
    cap_s: float = 10.0
    attempts: int = 0  # 0 = unlimited
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def next_delay(self) -> float | None:
        """The wait before the next attempt, or None when the attempts are used up."""
        if self.attempts and self.failures >= self.attempts:
            return None
        delay = min(self.cap_s, self.base_s * (2**self.failures))
        self.failures += 1
        return self.rng.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.failures = 0
