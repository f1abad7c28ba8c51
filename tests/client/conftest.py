"""Fixtures: a TCP proxy that can fail, in front of the shared `control` server (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest_asyncio

from control_harness import ServerHandle


class FlakyProxy:
    """A loopback TCP proxy in front of a server that a test can break.

    `cut()` drops every open connection; `refuse` makes new ones fail at once (an outage);
    `blackhole()` keeps the open connections but silently discards everything on them (a link
    that went dead without a FIN or RST). New connections always forward normally otherwise.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.refuse = False
        self.connections = 0
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter, list[bool]]] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def url(self, path: str = "/v1/control") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self.refuse:
            client_writer.transport.abort()
            return
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self.connections += 1
        dead = [False]
        self._pairs.append((client_writer, server_writer, dead))
        for reader, writer in ((client_reader, server_writer), (server_reader, client_writer)):
            task = asyncio.create_task(self._pump(reader, writer, dead))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dead: list[bool]) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                if not dead[0]:
                    writer.write(data)
                    await writer.drain()
        if not dead[0]:
            writer.transport.abort()

    def cut(self) -> None:
        """Drop every open connection now (both sides see a reset)."""
        for client_writer, server_writer, _ in self._pairs:
            client_writer.transport.abort()
            server_writer.transport.abort()
        self._pairs.clear()

    def blackhole(self) -> None:
        """Open connections stay open but carry nothing from now on."""
        for _, _, dead in self._pairs:
            dead[0] = True

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest_asyncio.fixture
async def proxy(control: ServerHandle, make_proxy: Callable[[str, int], Awaitable[FlakyProxy]]) -> FlakyProxy:
    """A FlakyProxy in front of the `control` server."""
    return await make_proxy(control.server.settings.host, control.server.port)


@pytest_asyncio.fixture
async def make_proxy() -> AsyncIterator[Callable[[str, int], Awaitable[FlakyProxy]]]:
    """`await make_proxy(host, port)`: a started FlakyProxy, stopped after the test."""
    started: list[FlakyProxy] = []

    async def make(host: str, port: int) -> FlakyProxy:
        flaky = FlakyProxy(host, port)
        await flaky.start()
        started.append(flaky)
        return flaky

    yield make
    for flaky in started:
        await flaky.stop()
