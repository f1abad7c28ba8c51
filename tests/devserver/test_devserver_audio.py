"""Audio through the dev server with the official Python SDK, in both peer-connection modes."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from devserver_helpers import collect_audio, peak_hz, publish_tone, rms_dbfs, running_devserver, tone, wait_event

RATE = 48000
SENT_DBFS = rms_dbfs(tone(440, RATE, RATE, 0.5))
MODES = [pytest.param(True, id="single-pc"), pytest.param(False, id="dual-pc")]


def assert_tone(samples, freq: float = 440.0) -> None:
    """The tone's frequency, its level (median 10 ms block, robust to a few dropouts caused by
    a loaded machine) and continuity (at least 80 % of blocks carry the tone)."""
    assert len(samples) >= RATE, "received too little audio"
    assert abs(peak_hz(samples, RATE) - freq) <= 5, f"peak at {peak_hz(samples, RATE):.1f} Hz"
    blocks = samples[: len(samples) // 480 * 480].reshape(-1, 480)
    levels = np.array([rms_dbfs(b) for b in blocks])
    level = float(np.median(levels))
    assert abs(level - SENT_DBFS) <= 2, f"level {level:.1f} dBFS, sent {SENT_DBFS:.1f} dBFS"
    audible = float(np.mean(levels > SENT_DBFS - 10))
    assert audible >= 0.8, f"only {audible:.0%} of 10 ms blocks carry the tone"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("single_pc", MODES)
async def test_tone_reaches_subscriber_joined_before_publish(connect, single_pc: bool) -> None:
    b = await connect("bob", single_pc=single_pc)
    got = b.first_track
    a = await connect("alice", single_pc=single_pc)
    pub = asyncio.create_task(publish_tone(a, 440))
    try:
        track, publication, participant = await asyncio.wait_for(got, 15)
        assert participant.identity == "alice"
        assert publication.source == 2  # SOURCE_MICROPHONE
        assert_tone(await asyncio.wait_for(collect_audio(track, 1.5), 15))
    finally:
        pub.cancel()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("single_pc", MODES)
async def test_tone_reaches_subscriber_joined_after_publish(connect, single_pc: bool) -> None:
    a = await connect("alice", single_pc=single_pc)
    published = wait_event(a, "local_track_published")
    pub = asyncio.create_task(publish_tone(a, 440))
    try:
        await asyncio.wait_for(published, 10)
        await asyncio.sleep(0.5)
        b = await connect("bob", single_pc=single_pc)
        track, _, participant = await asyncio.wait_for(b.first_track, 15)
        assert participant.identity == "alice"
        assert_tone(await asyncio.wait_for(collect_audio(track, 1.5), 15))
    finally:
        pub.cancel()


@pytest.mark.timeout(60)
async def test_both_directions_and_two_publishers(connect) -> None:
    """Each of two participants hears the other's tone (Python SDK both ways)."""
    a = await connect("alice")
    b = await connect("bob", single_pc=False)
    a_got = a.first_track
    b_got = b.first_track
    tasks = [asyncio.create_task(publish_tone(a, 440)), asyncio.create_task(publish_tone(b, 660))]
    try:
        (ta, _, pa), (tb, _, pb) = await asyncio.wait_for(asyncio.gather(a_got, b_got), 15)
        assert pa.identity == "bob" and pb.identity == "alice"
        heard_by_a, heard_by_b = await asyncio.wait_for(
            asyncio.gather(collect_audio(ta, 1.0), collect_audio(tb, 1.0)), 15)
        assert_tone(heard_by_a, 660)
        assert_tone(heard_by_b, 440)
    finally:
        for t in tasks:
            t.cancel()


@pytest.mark.timeout(60)
async def test_cannot_subscribe_gets_no_track(connect, subscriptions) -> None:
    """When alice's track reaches the listener the server has decided for everyone in the room
    (one step subscribes all): by then it forwards nothing to the watcher without canSubscribe."""
    watcher = await connect("watcher", can_subscribe=False)
    listener = await connect("listener")
    refused = watcher.first_track
    heard = listener.first_track
    a = await connect("alice")
    pub = asyncio.create_task(publish_tone(a))
    try:
        _, publication, _ = await asyncio.wait_for(heard, 15)
        subscribed = await subscriptions()
        assert subscribed["listener"] == {publication.sid}
        assert subscribed["watcher"] == set(), "the server subscribed a participant without canSubscribe"
        assert not refused.done()
        # it still sees the publication, just no media
        alice = next(p for p in watcher.remote_participants.values() if p.identity == "alice")
        assert alice.track_publications
    finally:
        pub.cancel()


@pytest.mark.timeout(60)
async def test_fallback_to_dual_pc_when_server_refuses_single_pc(connect) -> None:
    """With ``single_pc=False`` the server 404s ``/rtc/v1``; the SDK falls back to ``/rtc``."""
    async with running_devserver(single_pc=False) as srv:
        b = await connect("bob", srv=srv, single_pc=None)
        got = b.first_track
        a = await connect("alice", srv=srv, single_pc=None)
        pub = asyncio.create_task(publish_tone(a))
        try:
            track, _, _ = await asyncio.wait_for(got, 15)
            assert_tone(await asyncio.wait_for(collect_audio(track, 1.0), 15))
            sessions = await srv.call(lambda: [s.single_pc for s in srv.sessions])
            assert sessions and not any(sessions)
        finally:
            pub.cancel()
            await a.disconnect()
            await b.disconnect()


@pytest.mark.timeout(60)
async def test_rooms_are_isolated(connect) -> None:
    b = await connect("bob", "room-1")
    d = await connect("dana", "room-2")
    b_got, d_got = b.first_track, d.first_track
    a = await connect("alice", "room-1")
    c = await connect("carol", "room-2")
    tasks = [asyncio.create_task(publish_tone(a, 440)), asyncio.create_task(publish_tone(c, 660))]
    try:
        (tb, _, pb), (td, _, pd) = await asyncio.wait_for(asyncio.gather(b_got, d_got), 15)
        assert (pb.identity, pd.identity) == ("alice", "carol")
        assert {p.identity for p in b.remote_participants.values()} == {"alice"}
        assert {p.identity for p in d.remote_participants.values()} == {"carol"}
        sb, sd = await asyncio.wait_for(asyncio.gather(collect_audio(tb, 1.0), collect_audio(td, 1.0)), 15)
        assert_tone(sb, 440)
        assert_tone(sd, 660)
    finally:
        for t in tasks:
            t.cancel()


@pytest.mark.timeout(60)
async def test_server_in_its_own_process(connect) -> None:
    """``own_process=True`` runs ``python -m roomscribe.devserver``; audio and the RoomService work the same."""
    from livekit import api

    async with running_devserver(own_process=True, keys={"devkey": "secret"}) as srv:
        b = await connect("bob", srv=srv)
        a = await connect("alice", srv=srv, single_pc=False)
        pub = asyncio.create_task(publish_tone(a, 440))
        try:
            track, _, _ = await asyncio.wait_for(b.first_track, 15)
            assert_tone(await asyncio.wait_for(collect_audio(track, 1.0), 15))
            lkapi = api.LiveKitAPI(srv.http_url, "devkey", "secret")
            try:
                parts = (await lkapi.room.list_participants(api.ListParticipantsRequest(room="r1"))).participants
            finally:
                await lkapi.aclose()
            assert {p.identity for p in parts} == {"alice", "bob"}
        finally:
            pub.cancel()
            await a.disconnect()
            await b.disconnect()
