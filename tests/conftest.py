"""Fixtures shared by every suite: the real model (loaded once) and real servers on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
import pytest_asyncio

from agent.asr import AsrEngine
from agent.config import AsrConfig
from control_harness import ServerHandle, serving, start_livekit_control


@pytest.fixture(scope="session")
def engine() -> Iterator[AsrEngine]:
    """The real tiny.en model, loaded once for the whole run (the engine is bound to no event loop)."""
    eng = AsrEngine(AsrConfig())
    eng.start_sync()
    yield eng
    eng.close_sync()


@pytest_asyncio.fixture
async def control(engine: AsrEngine) -> AsyncIterator[ServerHandle]:
    """A real control server (ws transport) on a free loopback port, sharing the session's model."""
    async with serving(engine, grace_period_s=15.0) as handle:
        yield handle


@pytest_asyncio.fixture
async def lk_control(engine: AsrEngine) -> AsyncIterator[ServerHandle]:
    """A control server whose default transport is LiveKit, with its embedded dev server."""
    server = await start_livekit_control(engine)
    async with aiohttp.ClientSession() as http:
        yield ServerHandle(server, http)
    await server.stop()


@pytest.fixture(scope="session")
def base_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AsrEngine]:
    """The multilingual `base` model (the test extra installs its packages), joined into a fresh cache
    directory and loaded once. Missing: skipped loudly, and under CI a failure."""
    import os

    from agent.models import ModelError, resolve_model

    try:
        path = resolve_model("base", tmp_path_factory.mktemp("model-cache"))
    except ModelError as error:
        message = f"BASE MODEL TESTS NOT RUN: {error}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    eng = AsrEngine(AsrConfig(model_path=str(path)))
    eng.start_sync()
    yield eng
    eng.close_sync()
