"""Admission control: how many sessions, sockets and subscriptions the server takes.

Every cap is a setting (`ROOMSCRIBE_MAX_*`, 0: no cap). Over a cap the client gets a coded `error`,
with `retry_after` where waiting helps, never a hang or a silent close:

- `limit.sessions`: `session.start` while the server holds `max_sessions` sessions (those in their
  grace period count; a resume or a user replacing their own session does not add one). The
  socket stays open; try again after `retry_after`.
- `limit.sockets` / `limit.sockets_per_user`: a control socket over `max_sockets` in total or
  `max_sockets_per_user` for its user gets the error instead of `hello`, then close code 1013.
- `limit.subscriptions`: `subscribe` on a socket that holds `max_subscriptions_per_socket`.
- `session.start_timeout`: a socket with neither a session nor a subscription `start_timeout_s`
  after it connected gets the error, then close code 4008.
- A session longer than `max_session_s` is stopped: its open utterance is finalised, then
  `session.ended {reason: "max_duration"}`.

Pure: the caller does the I/O.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from control.schema import ProtocolError

if TYPE_CHECKING:
    from control.config import Settings

#: Real-time sessions one core serves with the bundled tiny.en model (docs/benchmarks.md: 16 on
#: 2 cores with p95 end of speech → final ≤ 1.5 s and nothing lost). The default session cap is
#: this times the usable cores; set ROOMSCRIBE_MAX_SESSIONS for another model or machine.
SESSIONS_PER_CORE = 8
#: `retry_after` of the errors over a capacity cap (seconds).
RETRY_AFTER_S = 5.0

def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Limits:
    """The caps in force (0: no cap)."""

    max_sessions: int = 0
    max_sockets: int = 0
    max_sockets_per_user: int = 0
    max_subscriptions_per_socket: int = 0
    start_timeout_s: float = 0.0
    max_session_s: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """The settings' caps; no `max_sessions` setting means SESSIONS_PER_CORE × usable cores."""
        sessions = settings.max_sessions if settings.max_sessions is not None else SESSIONS_PER_CORE * usable_cores()
        return cls(
            max_sessions=sessions,
            max_sockets=settings.max_sockets,
            max_sockets_per_user=settings.max_sockets_per_user,
            max_subscriptions_per_socket=settings.max_subscriptions_per_socket,
            start_timeout_s=settings.start_timeout_s,
            max_session_s=settings.max_session_s,
        )

    def session_refusal(self, sessions: int, replacing: bool) -> ProtocolError | None:
        """Why a new session may not start while the server holds `sessions` (None: it may).
        `replacing`: the user's own session ends for it, so the count does not grow."""
        if self.max_sessions <= 0 or replacing or sessions < self.max_sessions:
            return None
        return ProtocolError(
            "limit.sessions",
            f"the server is at its limit of {self.max_sessions} sessions; try again in {RETRY_AFTER_S:g} s",
            retry_after=RETRY_AFTER_S,
        )

    def subscription_refusal(self, held: int) -> ProtocolError | None:
        """Why a socket holding `held` subscriptions may not add one (None: it may)."""
        if self.max_subscriptions_per_socket <= 0 or held < self.max_subscriptions_per_socket:
            return None
        return ProtocolError(
            "limit.subscriptions",
            f"this socket holds {held} subscriptions, the most it may; unsubscribe from one first",
        )

    def start_timeout_error(self) -> ProtocolError:
        """What a socket that started nothing in time is told before it is closed."""
        return ProtocolError(
            "session.start_timeout",
            f"no session.start or subscribe within {self.start_timeout_s:g} s of connecting; the socket is closed",
        )


class SocketCount:
    """The open control sockets, in total and per user."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.total = 0
        self._per_user: Counter[str] = Counter()

    def of(self, user: str) -> int:
        return self._per_user[user]

    def admit(self, user: str) -> ProtocolError | None:
        """Count a new socket of `user`, or say why it is refused (then it is not counted)."""
        limits = self.limits
        if 0 < limits.max_sockets <= self.total:
            return ProtocolError(
                "limit.sockets",
                f"the server is at its limit of {limits.max_sockets} control sockets; try again in {RETRY_AFTER_S:g} s",
                retry_after=RETRY_AFTER_S,
            )
        if 0 < limits.max_sockets_per_user <= self._per_user[user]:
            return ProtocolError(
                "limit.sockets_per_user",
                f"this user already has {limits.max_sockets_per_user} control sockets open, the most allowed; "
                f"close one (or try again in {RETRY_AFTER_S:g} s, once a dropped one is noticed)",
                retry_after=RETRY_AFTER_S,
            )
        self.total += 1
        self._per_user[user] += 1
        return None

    def release(self, user: str) -> None:
        """A socket that `admit` counted has closed."""
        self.total -= 1
        self._per_user[user] -= 1
        if self._per_user[user] <= 0:
            del self._per_user[user]
