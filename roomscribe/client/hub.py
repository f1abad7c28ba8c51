"""Delivers events to callbacks and to any number of async iterators."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from roomscribe.client.events import Event

log = logging.getLogger(__name__)

Callback = Callable[[Event], Any]
_END = object()


class EventHub:
    """`on(cb, types)` for callbacks (sync, or async: run as tasks); `stream()` for `async for`."""

    def __init__(self) -> None:
        self._callbacks: list[tuple[Callback, frozenset[str] | None]] = []
        self._queues: list[asyncio.Queue[Any]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = False

    def on(self, callback: Callback, types: Iterable[str] | None = None) -> Callable[[], None]:
        """Call `callback(event)` for every event (or those of `types`); returns a remover."""
        entry = (callback, frozenset(types) if types is not None else None)
        self._callbacks.append(entry)
        return lambda: self._callbacks.remove(entry) if entry in self._callbacks else None

    async def stream(self) -> AsyncIterator[Event]:
        """Every event from now until the hub closes."""
        if self.closed:
            return
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._queues.append(queue)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                yield item
        finally:
            self._queues.remove(queue)

    def publish(self, event: Event) -> None:
        for queue in self._queues:
            queue.put_nowait(event)
        for callback, types in list(self._callbacks):
            if types is not None and event.type not in types:
                continue
            try:
                result = callback(event)
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            except Exception:
                log.exception("event callback %r failed", callback)

    def close(self) -> None:
        """End every iterator (after the events already queued)."""
        if self.closed:
            return
        self.closed = True
        for queue in self._queues:
            queue.put_nowait(_END)
