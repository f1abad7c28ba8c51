"""The tests' socket client fails a test when the server sends a message outside the wire schema."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from control_harness import RawClient


@pytest.mark.timeout(20)
async def test_a_message_outside_the_schema_fails_the_waiting_test() -> None:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "status", "code": "x", "message": "y", "undeclared": 1})
        await ws.receive()  # until the client closes
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # aiohttp has no public accessor
    try:
        async with aiohttp.ClientSession() as http:
            client = RawClient(await http.ws_connect(f"http://127.0.0.1:{port}/"))
            with pytest.raises(AssertionError, match="undeclared"):
                await client.wait_type("never-sent", timeout=10)
            assert len(client.off_schema) == 1
            client.off_schema.clear()
            await client.close()
    finally:
        await runner.cleanup()
