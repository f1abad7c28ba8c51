"""A cluster in one test process: control replicas and workers sharing one Redis key prefix (and one
control secret), each with its own Redis connection; and a wait for a Redis key event."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp

from agent.asr import AsrEngine
from agent.config import PipelineConfig
from agent.worker import TranscriptionWorker
from control.cluster_store import ClusterStore
from control.livekit_media import LiveKitTransport
from control.server import ControlServer
from control_harness import ServerHandle, make_settings

#: The `notify-keyspace-events` flags that make Redis announce each key event.
_EVENT_FLAGS = {"del": "Eg", "expired": "Ex"}


class ClusterHarness:
    """Control replicas and workers on one Redis; `close` stops them all, each step bounded."""

    def __init__(self, redis_url: str, prefix: str, engine: AsrEngine, http: aiohttp.ClientSession) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.engine = engine
        self.http = http
        self.secret = secrets.token_urlsafe(32)
        self.replicas: list[ControlServer] = []
        self.workers: list[TranscriptionWorker] = []
        self.stores: list[ClusterStore] = []

    def settings(self, **overrides: Any) -> Any:
        overrides.setdefault("grace_period_s", 30.0)
        return make_settings(control_secret=self.secret, **overrides)

    def store(self) -> ClusterStore:
        """A store with a connection of its own (closed by `close`)."""
        store = ClusterStore.from_url(self.redis_url, prefix=self.prefix)
        self.stores.append(store)
        return store

    async def replica(self, **overrides: Any) -> ServerHandle:
        server = ControlServer(self.settings(**overrides), cluster=self.store())
        await server.start()
        self.replicas.append(server)
        return ServerHandle(server, self.http)

    async def worker(self, capacity: int = 4, livekit: LiveKitTransport | None = None) -> TranscriptionWorker:
        worker = TranscriptionWorker(
            self.store(), self.engine, PipelineConfig(), worker_id=f"w{len(self.workers) + 1}", capacity=capacity, livekit=livekit
        )
        await worker.start()
        self.workers.append(worker)
        return worker

    async def close(self) -> None:
        """Everything stopped, each step bounded (a hung step fails the test instead of the run)."""
        steps = [*(s.stop() for s in self.replicas), *(w.stop() for w in self.workers), *(s.close() for s in self.stores)]
        for step in steps:
            await asyncio.wait_for(step, 30)


@contextlib.asynccontextmanager
async def key_event(
    store: ClusterStore, event: str, key: str, timeout_s: float = 10.0
) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """Listen for Redis's announcement of `event` ("del", "expired") on `key` (without the store's
    prefix) from now on; the context gives a wait for it, so a test needs no polling or sleep."""
    await store.redis.config_set("notify-keyspace-events", _EVENT_FLAGS[event])
    full_key = (store.prefix + key).encode()
    async with store.redis.pubsub() as pubsub:
        await pubsub.subscribe(f"__keyevent@0__:{event}")

        async def wait() -> None:
            async with asyncio.timeout(timeout_s):
                while (message := await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)) is None or (
                    message["data"] != full_key
                ):
                    pass

        yield wait
