"""The Twirp RoomService subset, driven with ``livekit-api`` exactly as the control plane does."""

from __future__ import annotations

import asyncio

import pytest
from livekit import api, rtc

from devserver_helpers import collect_audio, peak_hz, publish_tone, wait_event


@pytest.fixture
async def lkapi(server):
    client = api.LiveKitAPI(server.http_url, "devkey", "secret")
    yield client
    await client.aclose()


@pytest.mark.timeout(30)
async def test_create_list_delete_rooms(lkapi) -> None:
    room = await lkapi.room.create_room(api.CreateRoomRequest(name="made", empty_timeout=30, metadata="m"))
    assert room.name == "made" and room.sid.startswith("RM_") and room.metadata == "m"
    again = await lkapi.room.create_room(api.CreateRoomRequest(name="made"))
    assert again.sid == room.sid  # idempotent, like LiveKit
    await lkapi.room.create_room(api.CreateRoomRequest(name="other"))
    names = {r.name for r in (await lkapi.room.list_rooms(api.ListRoomsRequest())).rooms}
    assert names == {"made", "other"}
    only = (await lkapi.room.list_rooms(api.ListRoomsRequest(names=["other"]))).rooms
    assert [r.name for r in only] == ["other"]
    await lkapi.room.delete_room(api.DeleteRoomRequest(room="made"))
    names = {r.name for r in (await lkapi.room.list_rooms(api.ListRoomsRequest())).rooms}
    assert names == {"other"}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("single_pc", [True, False], ids=["single-pc", "dual-pc"])
async def test_participants_remove_and_update_subscriptions(server, lkapi, connect, single_pc: bool) -> None:
    b = await connect("bob", single_pc=single_pc)
    a = await connect("alice")
    pub = asyncio.create_task(publish_tone(a))
    try:
        track, publication, _ = await asyncio.wait_for(b.first_track, 15)
        parts = (await lkapi.room.list_participants(api.ListParticipantsRequest(room="r1"))).participants
        assert {p.identity for p in parts} == {"alice", "bob"}
        alice = next(p for p in parts if p.identity == "alice")
        assert [t.sid for t in alice.tracks] == [publication.sid]
        info = await lkapi.room.get_participant(api.RoomParticipantIdentity(room="r1", identity="bob"))
        assert info.identity == "bob" and info.sid == b.local_participant.sid

        # the SDKs have no event for a server-side unsubscription: check the server's state,
        # then that a new subscription delivers the track again
        await lkapi.room.update_subscriptions(api.UpdateSubscriptionsRequest(
            room="r1", identity="bob", track_sids=[publication.sid], subscribe=False))
        subs = await server.call(lambda: set(server.rooms.get("r1").participants["bob"].subscriptions))
        assert subs == set()
        resubscribed = wait_event(b, "track_subscribed")
        await lkapi.room.update_subscriptions(api.UpdateSubscriptionsRequest(
            room="r1", identity="bob", track_sids=[publication.sid], subscribe=True))
        track, _, _ = await asyncio.wait_for(resubscribed, 10)
        assert abs(peak_hz(await asyncio.wait_for(collect_audio(track, 0.5), 10), 48000) - 440) <= 5

        kicked = wait_event(b, "disconnected")
        await lkapi.room.remove_participant(api.RoomParticipantIdentity(room="r1", identity="bob"))
        (reason,) = await asyncio.wait_for(kicked, 10)
        assert reason == rtc.DisconnectReason.PARTICIPANT_REMOVED
        parts = (await lkapi.room.list_participants(api.ListParticipantsRequest(room="r1"))).participants
        assert [p.identity for p in parts] == ["alice"]
    finally:
        pub.cancel()


@pytest.mark.timeout(30)
async def test_delete_room_disconnects_participants(lkapi, connect) -> None:
    a = await connect("alice", "doomed")
    gone = wait_event(a, "disconnected")
    await lkapi.room.delete_room(api.DeleteRoomRequest(room="doomed"))
    (reason,) = await asyncio.wait_for(gone, 10)
    assert reason == rtc.DisconnectReason.ROOM_DELETED


@pytest.mark.timeout(30)
async def test_errors_and_permissions(server, lkapi) -> None:
    with pytest.raises(api.TwirpError) as info:
        await lkapi.room.list_participants(api.ListParticipantsRequest(room="nope"))
    assert info.value.status == 404 and "does not exist" in info.value.message

    wrong = api.LiveKitAPI(server.http_url, "devkey", "wrong-secret")
    try:
        with pytest.raises(api.TwirpError) as info:
            await wrong.room.list_rooms(api.ListRoomsRequest())
        assert info.value.status == 401 and "signature" in info.value.message
    finally:
        await wrong.aclose()

    # an admin token for one room may not list another room's participants
    import aiohttp

    token = (api.AccessToken("devkey", "secret")
             .with_grants(api.VideoGrants(room_admin=True, room="room-a")).to_jwt())
    await lkapi.room.create_room(api.CreateRoomRequest(name="room-b"))
    async with aiohttp.ClientSession() as http:
        async with http.post(server.http_url + "/twirp/livekit.RoomService/ListParticipants",
                             json={"room": "room-b"},
                             headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 403
            assert "token is for room 'room-a'" in (await resp.json())["msg"]
        async with http.post(server.http_url + "/twirp/livekit.RoomService/Nope", json={},
                             headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 404 and (await resp.json())["code"] == "bad_route"


@pytest.mark.timeout(30)
async def test_max_participants_from_create_room(lkapi, connect) -> None:
    await lkapi.room.create_room(api.CreateRoomRequest(name="tiny", max_participants=1))
    await connect("alice", "tiny")
    with pytest.raises(rtc.ConnectError) as info:
        await connect("bob", "tiny")
    assert "403" in str(info.value) and "is full" in str(info.value)
