"""A real control server on loopback and a bare socket client, for tests.

The client checks every text message the server sends against the wire schema (control/schema.py,
no undeclared fields): a message outside it fails the test that waits for anything next."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec

from control.config import Settings
from control.schema import decode_server_message
from control.server import ControlServer
from tokens import mint_control_token


class RawClient:
    """A bare control-socket client for tests: sends what it is told, records what arrives."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.binary: list[bytes] = []
        self.off_schema: list[str] = []  # server messages the wire schema does not describe
        self._new = asyncio.Condition()
        self._reader = asyncio.get_running_loop().create_task(self._read())
        self.closed = asyncio.Event()

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    event = json.loads(msg.data)
                    try:
                        decode_server_message(event, exact=True)
                    except msgspec.ValidationError as error:
                        self.off_schema.append(f"{error}: {msg.data[:300]}")
                    self.events.append(event)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    self.binary.append(msg.data)
                async with self._new:
                    self._new.notify_all()
        finally:
            self.closed.set()
            async with self._new:
                self._new.notify_all()

    async def send(self, **message: Any) -> None:
        await self.ws.send_json(message)

    async def wait_for(self, predicate, timeout: float = 30.0) -> dict[str, Any]:
        """The first recorded event matching `predicate` (waits for it to arrive)."""

        async def find() -> dict[str, Any]:
            async with self._new:
                while True:
                    self.check_schema()
                    for event in self.events:
                        if predicate(event):
                            return event
                    if self.closed.is_set():
                        raise AssertionError(f"socket closed; events: {self.events}")
                    await self._new.wait()

        return await asyncio.wait_for(find(), timeout)

    async def wait_type(self, msg_type: str, timeout: float = 30.0, **fields: Any) -> dict[str, Any]:
        return await self.wait_for(
            lambda e: e.get("type") == msg_type and all(e.get(k) == v for k, v in fields.items()), timeout
        )

    def heard(self, identity: str, timeout: float = 30.0) -> asyncio.Future[dict[str, Any]]:
        """Done when the server reports `status {code: "listening"}` for `identity`'s microphone
        (a client speaks after it: before, WebRTC may still time-stretch the audio)."""
        return asyncio.ensure_future(
            self.wait_for(
                lambda e: e.get("type") == "status" and e.get("code") == "listening" and e.get("participant") == identity,
                timeout,
            )
        )

    def of_type(self, msg_type: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == msg_type]

    def check_schema(self) -> None:
        """Fail if the server sent anything its wire schema does not describe."""
        if self.off_schema:
            raise AssertionError(f"server messages outside the wire schema: {self.off_schema}")

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        self.check_schema()


class ServerHandle:
    """A running control server and the means to connect to it."""

    def __init__(self, server: ControlServer, http: aiohttp.ClientSession) -> None:
        self.server = server
        self.http = http
        self.secret = server.settings.control_secret

    def token(self, user: str = "alice", **kwargs: Any) -> str:
        return mint_control_token(self.secret, user, **kwargs)

    async def connect(self, user: str = "alice", token: str | None = None) -> RawClient:
        ws = await self.http.ws_connect(
            self.server.url, headers={"Authorization": f"Bearer {token or self.token(user)}"}
        )
        client = RawClient(ws)
        await client.wait_type("hello")
        return client


def make_settings(**overrides: Any) -> Settings:
    settings = Settings(host="127.0.0.1", port=0, control_secret=secrets.token_urlsafe(32), audio_transport="ws")
    for key, value in overrides.items():
        setattr(settings, key, value)
    return settings


async def start_livekit_control(engine: Any, **overrides: object) -> ControlServer:
    """A control server whose default transport is LiveKit, with its own embedded dev server."""
    overrides.setdefault("grace_period_s", 20.0)
    settings = make_settings(audio_transport="livekit", devserver_port=0, **overrides)
    server = ControlServer(settings, engine=engine)
    await server.start()
    return server


@contextlib.asynccontextmanager
async def serving(engine: Any, **overrides: Any) -> AsyncIterator[ServerHandle]:
    """A control server built from `make_settings(**overrides)`, running for the block."""
    server = ControlServer(make_settings(**overrides), engine=engine)
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            yield ServerHandle(server, http)
    finally:
        await server.stop()
