"""When a live control socket's token runs out: the schedule of `auth.expiring`, `auth.expired` and the close.

Pure: times in, times out. A token accepted at `accepted_at` (connect or `auth.refresh`) with
expiry `exp` gets `auth.expiring` `warn_s` before `exp` — at most half its remaining life, so a
short-lived token is not told at once and a client that refreshes on every notice never loops —
and `auth.expired` at `exp + leeway_s` (as long as the token would be accepted at connect). The
socket is closed `grace_s` after that unless a fresh token arrived.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TokenExpiry:
    """The expiry rule for control tokens on live sockets (from Settings)."""

    warn_s: float = 60.0
    leeway_s: float = 5.0
    grace_s: float = 10.0

    def warn_at(self, expires_at: float, accepted_at: float) -> float:
        """When to send `auth.expiring` (wall clock, Unix seconds)."""
        remaining = max(0.0, expires_at - accepted_at)
        return expires_at - min(self.warn_s, remaining / 2)

    def expired_at(self, expires_at: float) -> float:
        """When the token stops counting: `auth.expired`, and requests other than `auth.refresh` are refused."""
        return expires_at + self.leeway_s

    def close_at(self, expires_at: float) -> float:
        """When the socket is closed with CLOSE_TOKEN_EXPIRED if no fresh token came."""
        return self.expired_at(expires_at) + self.grace_s
