"""Room names that cannot collide, the multi-user room rule, the `rooms` claim, and room release."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import jwt
import pytest

from control.config import MAX_ROOM_PREFIX, ConfigError, Settings
from control.room_users import RoomUsers
from control.rooms import MAX_ROOM_NAME, check_multi_user_room, room_name
from control.schema import ProtocolError
from tokens import CONTROL_AUDIENCE, AuthError, mint_control_token, verify_control_token

pytestmark = pytest.mark.timeout(30)
SECRET = "test-secret-of-at-least-32-bytes-long!!"
PREFIX = "roomscribe-"


def test_user_ids_that_sanitise_alike_get_different_rooms() -> None:
    alike = ["a@b", "a_b", "a b", "a/b", "a\u00e9b", "a\ud800b"]  # a lone surrogate too (JSON allows it)
    long = ["x" * 200 + "1", "x" * 200 + "2"]  # equal in the readable part, which is cut short
    rooms = [room_name("user", PREFIX, user) for user in alike + long]
    assert len(set(rooms)) == len(rooms)
    assert room_name("user", PREFIX, "a@b") == room_name("user", PREFIX, "a@b"), "one user keeps one room"


def test_room_names_are_readable_bounded_and_per_strategy() -> None:
    room = room_name("user", PREFIX, "alice")
    assert room.startswith("roomscribe-u-alice-") and len(room) == len("roomscribe-u-alice-") + 24
    timed = room_name("user_timestamp", PREFIX, "alice", now=12.5)
    assert timed == room + "-12500"
    huge = room_name("user_timestamp", "p" * MAX_ROOM_PREFIX, "\u2603" * 10_000)
    assert len(huge) <= MAX_ROOM_NAME and all(c.isascii() for c in huge)
    with pytest.raises(ConfigError):
        Settings.from_env({"ROOMSCRIBE_ROOM_PREFIX": "p" * (MAX_ROOM_PREFIX + 1)})
    with pytest.raises(ValueError):
        room_name("per_planet", PREFIX, "alice")


@pytest.mark.parametrize("user", ["alice", "team", "u-", "a@b"])
def test_no_multi_user_session_may_name_a_single_user_room(user: str) -> None:
    room = room_name("user", PREFIX, user)
    for allowed in (None, {room}):  # with or without a `rooms` claim, listed or not
        with pytest.raises(ProtocolError) as info:
            check_multi_user_room(room, PREFIX, allowed)
        assert info.value.code == "room.not_allowed"


def test_multi_user_room_rule() -> None:
    # No `rooms` claim (every multi_user token minted before it existed): any other room, as before.
    for room in ("team", "roomscribe-alice", "roomscribe-mu-team", "roomscribe-", "u-team", "roomscribe-uteam"):
        check_multi_user_room(room, PREFIX, None)
    check_multi_user_room("team", PREFIX, {"team"})  # a `rooms` claim: the rooms it lists
    refused = [
        ("roomscribe-u-", None),  # the single-user namespace, whoever's room it would be
        ("roomscribe-u-team", {"roomscribe-u-team"}),  # listing it does not help
        ("other", {"team"}),  # not listed
        ("team", set()),  # an empty list allows no room
    ]
    for room, allowed in refused:
        with pytest.raises(ProtocolError) as info:
            check_multi_user_room(room, PREFIX, allowed, request_id=7)
        assert (info.value.code, info.value.request_id) == ("room.not_allowed", 7), room
    with pytest.raises(ProtocolError):  # the namespace follows the configured prefix
        check_multi_user_room("rs-u-x", "rs-", None)
    check_multi_user_room("roomscribe-u-x", "rs-", None)


def test_rooms_claim_roundtrip_and_refusals() -> None:
    token = mint_control_token(SECRET, "lead", permissions=("multi_user",), rooms=["standup", "team"])
    claims = verify_control_token(SECRET, token)
    assert claims.allows("multi_user") and claims.rooms == frozenset({"standup", "team"})
    assert verify_control_token(SECRET, mint_control_token(SECRET, "lead", permissions=("multi_user",))).rooms is None
    with pytest.raises(ValueError):
        mint_control_token(SECRET, "lead", rooms=["team"])  # `rooms` narrows multi_user; alone it means nothing
    with pytest.raises(ValueError):
        mint_control_token(SECRET, "lead", permissions=("multi_user",), rooms="team")  # one string is not a list
    now = int(time.time())
    for bad in ("team", [""], [1], {"a": 1}):
        forged = jwt.encode(
            {"sub": "x", "aud": CONTROL_AUDIENCE, "exp": now + 60, "multi_user": True, "rooms": bad}, SECRET, algorithm="HS256"
        )
        with pytest.raises(AuthError) as info:
            verify_control_token(SECRET, forged)
        assert info.value.code == "auth.malformed_token" and "rooms" in info.value.message


def test_cli_token_mints_the_rooms_claim(tmp_path) -> None:
    env = {**os.environ, "ROOMSCRIBE_CONTROL_SECRET": SECRET}
    cli = [sys.executable, "-m", "roomscribe.cli", "--env-file", str(tmp_path / "none"), "token", "--user", "lead"]
    out = subprocess.run(
        [*cli, "--room", "standup", "--room", "team"], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    claims = verify_control_token(SECRET, out.stdout.strip())
    assert claims.allows("multi_user") and claims.rooms == frozenset({"standup", "team"})


async def test_a_room_is_deleted_only_when_its_last_session_leaves() -> None:
    deleted: list[str] = []

    async def delete() -> None:
        deleted.append("r")

    rooms = RoomUsers()
    await rooms.acquire("r", "s1")
    await rooms.acquire("r", "s2")
    assert not await rooms.release("r", "s1", delete) and deleted == []
    assert rooms.users("r") == {"s2"}
    assert not await rooms.release("r", "s1", delete), "a second release changes nothing"
    assert await rooms.release("r", "s2", delete) and deleted == ["r"]
    assert not await rooms.release("r", "never-joined", delete) and deleted == ["r"]


async def test_joining_a_room_being_deleted_waits_for_the_deletion() -> None:
    started, finish = asyncio.Event(), asyncio.Event()
    order: list[str] = []

    async def delete() -> None:
        started.set()
        await finish.wait()
        order.append("deleted")

    rooms = RoomUsers()
    await rooms.acquire("r", "s1")
    releasing = asyncio.ensure_future(rooms.release("r", "s1", delete))
    await started.wait()
    joining = asyncio.ensure_future(rooms.acquire("r", "s2"))
    finish.set()
    await joining  # had it not waited, "joined" would come before "deleted"
    order.append("joined")
    assert await releasing and order == ["deleted", "joined"] and rooms.users("r") == {"s2"}
