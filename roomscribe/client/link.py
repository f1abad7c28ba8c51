"""One control WebSocket: open it (auth + `hello`), send under one lock, read, and tear it down fast."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

from control.schema import Request, encode
from roomscribe.client.errors import AuthRejected
from roomscribe.client.events import Hello, parse_event

CLOSE_TIMEOUT_S = 1.0


class Link:
    """A connected control socket. `last_received` is the monotonic time of the last message."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, hello: dict[str, Any]) -> None:
        self.ws = ws
        self.hello = hello
        self.last_received = time.monotonic()
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, http: aiohttp.ClientSession, url: str, token: str, timeout_s: float) -> Link:
        """Connect and wait for `hello`; raise AuthRejected on 401, aiohttp/OS/timeout errors otherwise."""
        try:
            ws = await asyncio.wait_for(
                http.ws_connect(
                    url,
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT_S),
                    max_msg_size=2 * 1024 * 1024,
                ),
                timeout_s,
            )
        except aiohttp.WSServerHandshakeError as error:
            if error.status == 401:
                raise AuthRejected(f"the server refused the control token (HTTP 401: {error.message})") from None
            raise
        try:
            msg = await ws.receive(timeout=timeout_s)
            hello = _json_object(msg.data) if msg.type == aiohttp.WSMsgType.TEXT else None
            if hello is None or not isinstance(parse_event(hello), Hello):
                raise aiohttp.ClientError(f"expected hello, got {msg.type.name} {str(msg.data)[:80]!r}")
        except BaseException:
            await cls._abort(ws)
            raise
        return cls(ws, hello)

    async def send_request(self, request: Request) -> None:
        """Write one request of the wire schema (control/schema.py)."""
        await self.send(lambda: request)

    async def send(self, make: Callable[[], Request | bytes | None]) -> bool:
        """Write what `make()` returns (a schema request or a binary frame), called under the send lock.

        Building the message under the lock keeps it in order with everything written before it
        (a ping's acknowledgement mark, the next audio frame). Returns False when `make` gave None.
        """
        async with self._lock:
            payload = make()
            if payload is None:
                return False
            if isinstance(payload, bytes):
                await self.ws.send_bytes(payload)
            else:
                await self.ws.send_str(encode(payload).decode())
            return True

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        """Decoded JSON messages until the socket closes (binary frames only refresh `last_received`)."""
        async for msg in self.ws:
            self.last_received = time.monotonic()
            if msg.type == aiohttp.WSMsgType.TEXT:
                message = _json_object(msg.data)
                if message is not None:
                    yield message
            elif msg.type == aiohttp.WSMsgType.ERROR:
                return

    async def close(self) -> None:
        await self._abort(self.ws)

    @staticmethod
    async def _abort(ws: aiohttp.ClientWebSocketResponse) -> None:
        """Close politely if the peer answers within a second, else drop the connection."""
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(ws.close(), CLOSE_TIMEOUT_S)


def _json_object(text: str) -> dict[str, Any] | None:
    """The JSON object in a text frame (None when the frame is not one)."""
    try:
        message = json.loads(text)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None
