"""Which worker takes a new session: the least loaded live one with room (LiveKit Agents' way).

Pure: it reads the workers' last heartbeats (control/schema.py `WorkerState`) and the time.
"""

from __future__ import annotations

from collections.abc import Iterable

from control.schema import WorkerState

#: A worker not heard from for this long is dead: no new session goes to it, its sessions move.
WORKER_TIMEOUT_S = 3.0
#: What `server.busy` tells a client to wait when no worker has room (seconds).
BUSY_RETRY_AFTER_S = 5.0
#: A worker's refusal (and then the client's error code): its model cannot serve the session's language or task.
LANGUAGE_UNSUPPORTED = "language.unsupported"


def alive(state: WorkerState, now: float, timeout_s: float = WORKER_TIMEOUT_S) -> bool:
    """Whether the worker's last heartbeat is recent enough."""
    return now - state.at <= timeout_s


def candidates(states: Iterable[WorkerState], now: float, *, exclude: Iterable[str] = ()) -> list[WorkerState]:
    """Live, not draining workers with a free slot, least loaded first (free share of capacity, then
    the audio its model is behind on, then the id for a stable order)."""
    skipped = set(exclude)
    free = [
        s
        for s in states
        if s.worker_id not in skipped and alive(s, now) and not s.draining and s.active < s.capacity
    ]
    return sorted(free, key=lambda s: (s.active / max(1, s.capacity), s.queued_final_audio_s, s.worker_id))
