"""Cluster fixtures: a real redis-server on a free loopback port, and a store on it per test."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from control.cluster_store import ClusterStore
from redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the run (tests keep apart by key prefix); skipped only where the
    package is missing on a developer's machine — CI installs it, so there it always runs."""
    if not RedisServer.available():
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed: .ci/run installs it from Debian")
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run installs it)")
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def key_prefix() -> str:
    return f"test-{secrets.token_hex(4)}:"


@pytest_asyncio.fixture
async def store(redis_server: RedisServer, key_prefix: str) -> AsyncIterator[ClusterStore]:
    st = ClusterStore.from_url(redis_server.url, prefix=key_prefix)
    yield st
    await st.close()
