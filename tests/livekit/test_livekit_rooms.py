"""Rooms and identities over the embedded dev server: look-alike user ids get their own rooms, two
sessions' agents share a multi-user room without pushing each other out, the room outlives the
first session to end, and a multi-user session may not name a single-user room (with or without a
`rooms` claim) nor, with one, an unlisted room."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from livekit import api

from livekit_publisher import publish_wav_subprocess
from speech_samples import LIBRI, LIBRI_TEXT, wer
from tokens import mint_client_token

pytestmark = pytest.mark.timeout(120)


def room_service(lk_control: Any) -> api.LiveKitAPI:
    settings = lk_control.server.settings
    return api.LiveKitAPI(
        lk_control.server.livekit_url.replace("ws://", "http://"), settings.livekit_api_key, settings.livekit_api_secret
    )


async def identities(lk: api.LiveKitAPI, room: str) -> set[str]:
    listing = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
    return {p.identity for p in listing.participants}


async def room_names(lk: api.LiveKitAPI) -> set[str]:
    return {r.name for r in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms}


async def settled(client: Any) -> None:
    """Every request sent so far has been handled (requests are read one at a time): a ping's pong."""
    await client.send(type="ping", id="sync")
    await client.wait_type("pong", id="sync")


async def test_look_alike_user_ids_get_their_own_rooms(lk_control) -> None:
    first, second = await lk_control.connect("a@b"), await lk_control.connect("a_b")
    await first.send(type="session.start")
    await second.send(type="session.start")
    ready = [await first.wait_type("session.ready"), await second.wait_type("session.ready")]
    assert ready[0]["room"] != ready[1]["room"]
    assert all(r["room"].startswith("roomscribe-u-a_b-") for r in ready)
    async with room_service(lk_control) as lk:
        for r in ready:  # each agent is in its own user's room, and both sessions live on
            assert await identities(lk, r["room"]) == {"roomscribe-agent-" + r["session_id"]}
    assert not first.of_type("session.ended") and not second.of_type("session.ended")
    await first.close()
    await second.close()


async def test_multi_user_session_may_not_name_a_single_user_or_unlisted_room(lk_control) -> None:
    alice = await lk_control.connect("alice")
    await alice.send(type="session.start")
    alices = await alice.wait_type("session.ready")
    alices_room = alices["room"]

    lead = await lk_control.connect(token=lk_control.token("lead", permissions=("multi_user",)))
    scoped = await lk_control.connect(
        token=lk_control.token("scoped", permissions=("multi_user",), rooms=["standup", "team", alices_room])
    )
    refusals = [(lead, alices_room), (lead, "roomscribe-u-x"), (scoped, alices_room), (scoped, "other")]
    for n, (client, room) in enumerate(refusals):
        await client.send(type="session.start", id=n, room=room)
        error = await client.wait_type("error", id=n)
        assert error["code"] == "room.not_allowed", (room, error)
    await settled(lead)  # the socket still serves
    await settled(scoped)
    async with room_service(lk_control) as lk:  # no agent went into alice's room
        assert await identities(lk, alices_room) == {"roomscribe-agent-" + alices["session_id"]}
    assert not alice.of_type("session.ended")
    # The same tokens reach the rooms they may: without a claim any other room, with one a listed room.
    await lead.send(type="session.start", id="ok", room="other")
    assert (await lead.wait_type("session.ready", id="ok"))["room"] == "other"
    await scoped.send(type="session.start", id="ok", room="team")
    assert (await scoped.wait_type("session.ready", id="ok"))["room"] == "team"
    for client in (alice, lead, scoped):
        await client.close()


async def test_two_sessions_share_a_multi_user_room_and_it_outlives_the_first(lk_control) -> None:
    room = "standup"
    settings = lk_control.server.settings
    # A `multi_user` token without `rooms` (as deployed before the claim) and one that lists the room.
    first = await lk_control.connect(token=lk_control.token("lead1", permissions=("multi_user",)))
    second = await lk_control.connect(token=lk_control.token("lead2", permissions=("multi_user",), rooms=[room]))
    await first.send(type="session.start", room=room)
    ready1 = await first.wait_type("session.ready")
    await second.send(type="session.start", room=room)
    ready2 = await second.wait_type("session.ready")
    agent1, agent2 = ("roomscribe-agent-" + r["session_id"] for r in (ready1, ready2))

    speaker = mint_client_token(settings.livekit_api_key, settings.livekit_api_secret, identity="speaker", room=room).token
    both_hear = asyncio.gather(first.heard("speaker"), second.heard("speaker"))
    await publish_wav_subprocess(ready1["livekit"]["url"], speaker, LIBRI, speak_after=both_hear)
    for client in (first, second):  # both agents stayed in the room and heard it all
        final = await client.wait_for(lambda e: e.get("type") == "transcript.final" and e.get("participant") == "speaker")
        assert wer(LIBRI_TEXT, final["text"]) <= 0.15, final
    async with room_service(lk_control) as lk:
        assert {agent1, agent2} <= await identities(lk, room)

        await first.send(type="session.stop")
        await first.wait_type("session.ended")
        await settled(first)  # the stop is done: its agent left and the room was released
        assert room in await room_names(lk), "the first session to end deleted the room under the other"
        present = await identities(lk, room)
        assert agent2 in present and agent1 not in present

        await second.send(type="session.stop")
        await second.wait_type("session.ended")
        await settled(second)
        assert room not in await room_names(lk), "the last session to leave deletes the room"
    for client in (first, second):
        assert not [e for e in client.of_type("status") if e["code"] in ("livekit.degraded", "livekit.failed")]
        await client.close()


async def test_a_multi_user_room_with_people_in_it_is_not_deleted(lk_control) -> None:
    """The people in a multi-user room are the app's: the transcriber leaving does not end their call."""
    from livekit import rtc

    room = "meeting"
    settings = lk_control.server.settings
    lead = await lk_control.connect(token=lk_control.token("lead", permissions=("multi_user",)))
    await lead.send(type="session.start", room=room)
    ready = await lead.wait_type("session.ready")
    person = rtc.Room()
    await person.connect(
        ready["livekit"]["url"],
        mint_client_token(settings.livekit_api_key, settings.livekit_api_secret, identity="person", room=room).token,
    )
    try:
        await lead.send(type="session.stop")
        await lead.wait_type("session.ended")
        await settled(lead)  # the agent left and the room was released
        async with room_service(lk_control) as lk:
            assert room in await room_names(lk)
            assert "person" in await identities(lk, room)
        assert person.connection_state == rtc.ConnectionState.CONN_CONNECTED
    finally:
        await person.disconnect()
        await lead.close()
