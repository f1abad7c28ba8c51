"""Child processes that do not outlive their parent (standard library only)."""

from __future__ import annotations

import ctypes
import signal
import sys
from collections.abc import Callable

#: prctl(2) option: the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1


def parent_death_signal(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` after which the child gets `sig` when its parent dies (even by SIGKILL).

    Linux only (None elsewhere). The kernel watches the *thread* that started the child: start it
    from a thread that lives as long as the process (the main thread, where asyncio runs).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it
    except (OSError, AttributeError):
        return None

    def set_parent_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

    return set_parent_death_signal
