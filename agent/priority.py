"""Scheduling priority for inference threads.

Speech recognition is bursty and can take every core for half a second; the media threads in the
same process (WebRTC jitter buffers and decoders in the LiveKit SDK, the dev server's relay, the
event loop) are real-time and distort audio when starved. Linux `nice` is per thread and
inherited by threads a thread creates, so inference threads lower their own priority, and the
model is loaded from such a thread so that its internal thread pools inherit it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


def lower_current_thread_priority(increment: int) -> None:
    """Raise this thread's nice value by `increment` (no-op where the OS does not support it)."""
    if increment <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + increment))
    except OSError as exc:  # e.g. a sandbox that forbids it
        log.debug("could not lower thread priority: %s", exc)


def run_in_low_priority_thread(fn: Callable[[], T], increment: int, name: str) -> T:
    """Run `fn` to completion in a new thread whose priority is lowered first; return its result."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        lower_current_thread_priority(increment)
        try:
            result.append(fn())
        except BaseException as exc:  # re-raised in the caller
            error.append(exc)

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]
