"""Fixtures: the real model, the dev server, and a control server using the LiveKit transport."""

from __future__ import annotations

from typing import AsyncIterator, Iterator

import aiohttp
import pytest
import pytest_asyncio

from agent.asr import AsrEngine
from agent.config import AsrConfig
from control.server import ControlServer
from control_harness import ServerHandle, start_livekit_control


@pytest.fixture(scope="session")
def engine() -> Iterator[AsrEngine]:
    eng = AsrEngine(AsrConfig())
    eng.start_sync()
    yield eng
    eng.close_sync()


@pytest_asyncio.fixture
async def lk_control(engine: AsrEngine) -> AsyncIterator[ServerHandle]:
    server = await start_livekit_control(engine)
    async with aiohttp.ClientSession() as http:
        yield ServerHandle(server, http)
    await server.stop()
