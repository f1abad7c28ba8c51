"""Fixtures: one loaded model for the session and real control servers on loopback."""

from __future__ import annotations

from typing import AsyncIterator, Iterator

import aiohttp
import pytest
import pytest_asyncio

from agent.asr import AsrEngine
from agent.config import AsrConfig
from control.server import ControlServer
from control_harness import ServerHandle, make_settings


@pytest.fixture(scope="session")
def engine() -> Iterator[AsrEngine]:
    """The real tiny.en model, loaded once for every test in the run."""
    eng = AsrEngine(AsrConfig())
    eng.start_sync()
    yield eng
    eng.close_sync()


@pytest_asyncio.fixture
async def control(engine: AsrEngine) -> AsyncIterator[ServerHandle]:
    """A real control server on a free loopback port, sharing the session's model."""
    server = ControlServer(make_settings(grace_period_s=5.0), engine=engine)
    await server.start()
    async with aiohttp.ClientSession() as http:
        yield ServerHandle(server, http)
    await server.stop()
