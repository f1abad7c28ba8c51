"""Fixtures for the dev server tests: a running server and SDK rooms that always disconnect."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from devserver_helpers import make_token, running_devserver, wait_event
from roomscribe.devserver import DevServer

logging.getLogger("aioice").setLevel(logging.WARNING)
logging.getLogger("aiortc").setLevel(logging.WARNING)


@pytest.fixture
async def server() -> AsyncIterator[DevServer]:
    """A dev server on a free loopback port, both PC modes enabled."""
    async with running_devserver(empty_timeout_s=5) as srv:
        yield srv


Connect = Callable[..., Awaitable["object"]]


@pytest.fixture
async def connect(server: DevServer) -> AsyncIterator[Connect]:
    """``await connect(identity, room, single_pc=True, **grants)`` → a connected ``rtc.Room``.

    Each room has ``first_track``: a future of the first ``track_subscribed`` event's args.
    """
    from livekit import rtc

    rooms: list[rtc.Room] = []

    async def _connect(identity: str, room: str = "r1", *, single_pc: bool | None = True,
                       auto_subscribe: bool = True, srv: DevServer | None = None,
                       **grants: Any) -> rtc.Room:
        target = srv or server
        lk_room = rtc.Room()
        rooms.append(lk_room)
        # registered before connecting, so tracks announced during connect are not missed
        lk_room.first_track = wait_event(lk_room, "track_subscribed")  # type: ignore[attr-defined]  # carried on the room for the test
        opts = rtc.RoomOptions(auto_subscribe=auto_subscribe, single_peer_connection=single_pc)
        await asyncio.wait_for(lk_room.connect(target.url, make_token(identity, room, **grants), opts), 15)
        return lk_room

    yield _connect
    for lk_room in rooms:
        with contextlib.suppress(Exception):  # already gone
            await asyncio.wait_for(lk_room.disconnect(), 5)


Subscriptions = Callable[..., Awaitable[dict[str, set[str]]]]


@pytest.fixture
def subscriptions(server: DevServer) -> Subscriptions:
    """``await subscriptions(room="r1")`` → {identity: sids of the tracks the server forwards to
    it}: the server's decision, to read once an event proves it was made (e.g. another
    participant's track arrived: the server subscribes everyone to a track in one step)."""

    async def _read(room: str = "r1") -> dict[str, set[str]]:
        def snapshot() -> dict[str, set[str]]:
            found = server.rooms.get(room)
            if found is None:
                return {}
            return {p.identity: set(p.subscriptions) for p in found.participants.values()}

        return await server.call(snapshot)

    return _read


@pytest.fixture
async def relayed(monkeypatch: pytest.MonkeyPatch) -> asyncio.Queue[tuple[str, bytes, int]]:
    """Each data packet an in-process server's rooms handle, in order, as (sender identity,
    payload, participants it was forwarded to): proof the server got a packet and what it did."""
    from livekit.protocol import models

    from roomscribe.devserver.room import Participant, Room

    loop = asyncio.get_running_loop()
    handled: asyncio.Queue[tuple[str, bytes, int]] = asyncio.Queue()
    relay = Room.relay_data

    def spy(self: Room, part: Participant, packet: models.DataPacket, reliable: bool) -> int:
        sent = relay(self, part, packet, reliable)
        loop.call_soon_threadsafe(handled.put_nowait, (part.identity, packet.user.payload, sent))
        return sent

    monkeypatch.setattr(Room, "relay_data", spy)
    return handled


def pytest_configure(config: pytest.Config) -> None:
    # the well-known dev secret ("secret") is shorter than PyJWT recommends; that is the point
    config.addinivalue_line("filterwarnings", "ignore::jwt.warnings.InsecureKeyLengthWarning")
