"""BackgroundTasks keeps tasks until they end and logs a failure instead of losing it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from roomscribe.common.tasks import BackgroundTasks

pytestmark = pytest.mark.timeout(10)


async def test_keeps_running_tasks_and_logs_failures(caplog: pytest.LogCaptureFixture) -> None:
    tasks = BackgroundTasks(logging.getLogger("test.tasks"), "test task")
    release = asyncio.Event()

    async def wait() -> str:
        await release.wait()
        return "done"

    async def fail() -> None:
        raise RuntimeError("boom")

    waiting = tasks.spawn(wait())
    failing = tasks.spawn(fail())
    await asyncio.wait([failing])
    await asyncio.sleep(0)  # done callbacks run on the next loop turn
    assert len(tasks) == 1 and "test task failed" in caplog.text and "boom" in caplog.text
    release.set()
    assert await waiting == "done"
    await asyncio.sleep(0)
    assert len(tasks) == 0


async def test_cancel_all() -> None:
    tasks = BackgroundTasks(logging.getLogger("test.tasks"))
    pending = tasks.spawn(asyncio.Event().wait())
    tasks.cancel_all()
    with pytest.raises(asyncio.CancelledError):
        await pending
