"""Room behaviour through the official Python SDK: auth, events, data, liveness, hidden, timeouts."""

from __future__ import annotations

import asyncio
import datetime

import aiohttp
import jwt
import pytest
from livekit import rtc

from devserver_helpers import make_token, publish_tone, running_devserver, wait_event


@pytest.mark.timeout(30)
@pytest.mark.parametrize("token_kind, reason", [
    ("bad-secret", "signature is invalid"),
    ("unknown-key", "unknown API key"),
    ("expired", "token is expired"),
    ("no-join", "no roomJoin grant"),
    ("garbage", "invalid token"),
])
async def test_refused_tokens_give_a_readable_reason(server, token_kind: str, reason: str) -> None:
    tokens = {
        "bad-secret": make_token("x", "r1", secret="not-the-secret"),
        "unknown-key": make_token("x", "r1", key="otherkey"),
        "expired": make_token("x", "r1", ttl_s=-600),
        "no-join": make_token("x", "r1", room_join=False),
        "garbage": "not.a.jwt",
    }
    room = rtc.Room()
    with pytest.raises(rtc.ConnectError) as info:
        await asyncio.wait_for(room.connect(server.url, tokens[token_kind]), 15)
    assert reason in str(info.value)
    assert "401" in str(info.value)


@pytest.mark.timeout(30)
async def test_validate_endpoints_and_wrong_room(server) -> None:
    """``/rtc/validate`` and ``/rtc/v1/validate`` explain refusals (status + text)."""
    good = make_token("x", "room-a")
    async with aiohttp.ClientSession() as http:
        for path in ("/rtc/validate", "/rtc/v1/validate"):
            async with http.get(server.http_url + path, params={"access_token": good}) as resp:
                assert resp.status == 200
            async with http.get(server.http_url + path,
                                headers={"Authorization": f"Bearer {good}"}) as resp:
                assert resp.status == 200
            # the dev server accepts an optional room= and checks it against the token
            async with http.get(server.http_url + path,
                                params={"access_token": good, "room": "room-b"}) as resp:
                assert resp.status == 401
                assert "token is for room 'room-a', not 'room-b'" in await resp.text()
            async with http.get(server.http_url + path) as resp:
                assert resp.status == 401
                assert "no access token" in await resp.text()
        async with http.get(server.http_url + "/rtc", params={"access_token": "x.y.z"}) as resp:
            assert resp.status == 401  # the upgrade itself is refused with the status


@pytest.mark.timeout(60)
@pytest.mark.parametrize("single_pc", [True, False], ids=["single-pc", "dual-pc"])
async def test_join_leave_publish_unpublish_events(connect, single_pc: bool) -> None:
    b = await connect("bob", single_pc=not single_pc)
    joined = wait_event(b, "participant_connected")
    published = wait_event(b, "track_published")
    a = await connect("alice", single_pc=single_pc)
    (p,) = await asyncio.wait_for(joined, 10)
    assert p.identity == "alice"
    source = rtc.AudioSource(48000, 1, queue_size_ms=20)
    track = rtc.LocalAudioTrack.create_audio_track("mic", source)
    local_pub = await a.local_participant.publish_track(
        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
    frame = rtc.AudioFrame(bytes(960), 48000, 1, 480)

    async def feed() -> None:
        while True:
            await source.capture_frame(frame)

    feeder = asyncio.create_task(feed())
    try:
        remote_pub, who = await asyncio.wait_for(published, 10)
        assert who.identity == "alice" and remote_pub.sid == local_pub.sid
        unpublished = wait_event(b, "track_unpublished")
        await a.local_participant.unpublish_track(local_pub.sid)
        gone_pub, who = await asyncio.wait_for(unpublished, 10)
        assert gone_pub.sid == local_pub.sid and who.identity == "alice"
    finally:
        feeder.cancel()
    left = wait_event(b, "participant_disconnected")
    await a.disconnect()
    (p,) = await asyncio.wait_for(left, 10)
    assert p.identity == "alice"
    assert not b.remote_participants


@pytest.mark.timeout(60)
async def test_data_packets_reliable_lossy_and_destinations(connect) -> None:
    b = await connect("bob")
    c = await connect("carol", single_pc=False)
    a = await connect("alice")
    got_b: asyncio.Queue = asyncio.Queue()
    got_c: asyncio.Queue = asyncio.Queue()
    b.on("data_received", got_b.put_nowait)
    c.on("data_received", got_c.put_nowait)
    await asyncio.sleep(0.5)  # data channels open
    await a.local_participant.publish_data(b"hello-reliable", reliable=True, topic="t1")
    for q in (got_b, got_c):
        pkt = await asyncio.wait_for(q.get(), 10)
        assert pkt.data == b"hello-reliable" and pkt.topic == "t1"
        assert pkt.participant.identity == "alice"
        assert pkt.kind == rtc.DataPacketKind.KIND_RELIABLE
    # lossy on loopback: allow a retry or two
    for _ in range(5):
        await a.local_participant.publish_data(b"hello-lossy", reliable=False)
        try:
            pkt = await asyncio.wait_for(got_b.get(), 2)
            break
        except TimeoutError:
            continue
    else:
        pytest.fail("lossy packet never arrived")
    assert pkt.data == b"hello-lossy" and pkt.kind == rtc.DataPacketKind.KIND_LOSSY
    await a.local_participant.publish_data(b"only-carol", reliable=True, destination_identities=["carol"])
    while (pkt := await asyncio.wait_for(got_c.get(), 10)).data != b"only-carol":
        assert pkt.data.startswith(b"hello-")
    # Alice's packets reach the server, and bob, in order: "only-carol" would come before this.
    await a.local_participant.publish_data(b"for-everyone", reliable=True)
    while (pkt := await asyncio.wait_for(got_b.get(), 10)).data != b"for-everyone":
        assert pkt.data.startswith(b"hello-"), pkt.data


async def deliver(sender: rtc.Room, inbox: asyncio.Queue, payload: bytes) -> None:
    """Send `payload` reliably until it is in `inbox` (a receiver's data channel opens a moment
    after it connects; until then the server has nowhere to send). Extra copies may follow."""
    for _ in range(20):
        await sender.local_participant.publish_data(payload, reliable=True)
        try:
            pkt = await asyncio.wait_for(inbox.get(), 0.5)
        except TimeoutError:
            continue
        assert pkt.data == payload
        return
    pytest.fail(f"{payload!r} never arrived")


@pytest.mark.timeout(60)
async def test_data_refused_without_can_publish_data(connect, relayed) -> None:
    """The server takes mute's packet and forwards it to no one; the first packet bob gets after
    that is one sent later (his channel is ordered: a forwarded "nope" would have come first)."""
    b = await connect("bob")
    mute = await connect("mute", can_publish_data=False)
    a = await connect("alice")
    got: asyncio.Queue = asyncio.Queue()
    b.on("data_received", got.put_nowait)
    await deliver(a, got, b"ready")
    # Sent from the client: the rule under test is the server's (the SDK does not refuse it).
    await mute.local_participant.publish_data(b"nope", reliable=True)
    while (handled := await asyncio.wait_for(relayed.get(), 10))[0] != "mute":
        assert handled[1] == b"ready"
    assert handled == ("mute", b"nope", 0)
    await a.local_participant.publish_data(b"after", reliable=True)
    while (pkt := await asyncio.wait_for(got.get(), 10)).data != b"after":
        assert pkt.data == b"ready", pkt.data


@pytest.mark.timeout(60)
async def test_duplicate_identity_replaces_old_participant(connect, server) -> None:
    b = await connect("bob")
    first = await connect("alice")
    kicked = wait_event(first, "disconnected")
    second = await connect("alice", single_pc=False)
    (reason,) = await asyncio.wait_for(kicked, 10)
    assert reason == rtc.DisconnectReason.DUPLICATE_IDENTITY
    await asyncio.sleep(0.3)
    alices = [p for p in b.remote_participants.values() if p.identity == "alice"]
    assert len(alices) == 1 and alices[0].sid == second.local_participant.sid
    count = await server.call(lambda: len(server.rooms.get("r1").participants))
    assert count == 2


@pytest.mark.timeout(30)
async def test_silent_client_is_removed_after_ping_timeout() -> None:
    """A client that joins and never pings is dropped; others see it leave."""
    async with running_devserver(ping_interval_s=1, ping_timeout_s=2) as srv:
        b = rtc.Room()
        try:
            await b.connect(srv.url, make_token("bob", "r1"))
            joined = wait_event(b, "participant_connected")
            left = wait_event(b, "participant_disconnected")
            async with aiohttp.ClientSession() as http:
                ws = await http.ws_connect(srv.url + "/rtc", params={
                    "access_token": make_token("zombie", "r1"), "protocol": "16", "auto_subscribe": "1"})
                msg = await ws.receive(timeout=5)
                from livekit.protocol import rtc as r

                assert r.SignalResponse.FromString(msg.data).WhichOneof("message") == "join"
                (p,) = await asyncio.wait_for(joined, 5)
                assert p.identity == "zombie"
                (p,) = await asyncio.wait_for(left, 10)
                assert p.identity == "zombie"
                await ws.close()
        finally:
            await b.disconnect()


@pytest.mark.timeout(60)
async def test_hidden_participant_is_not_announced(connect) -> None:
    b = await connect("bob")
    joined = wait_event(b, "participant_connected")
    spy = await connect("spy", hidden=True)
    a = await connect("alice")
    pub = asyncio.create_task(publish_tone(a))
    try:
        (p,) = await asyncio.wait_for(joined, 10)
        assert p.identity == "alice"
        _track, _, who = await asyncio.wait_for(spy.first_track, 15)
        assert who.identity == "alice"  # the hidden participant still subscribes
        assert "spy" not in {p.identity for p in b.remote_participants.values()}
        assert "spy" not in {p.identity for p in a.remote_participants.values()}
    finally:
        pub.cancel()


@pytest.mark.timeout(30)
async def test_room_closes_after_empty_timeout() -> None:
    async with running_devserver(empty_timeout_s=1) as srv:
        a = rtc.Room()
        await a.connect(srv.url, make_token("alice", "short"))
        assert await srv.call(lambda: "short" in srv.rooms.rooms)
        await a.disconnect()
        await asyncio.sleep(0.5)
        assert await srv.call(lambda: "short" in srv.rooms.rooms)
        await asyncio.sleep(1.5)
        assert not await srv.call(lambda: "short" in srv.rooms.rooms)


def test_token_helper_sets_expiry() -> None:
    claims = jwt.decode(make_token("x", "r", ttl_s=60), "secret", algorithms=["HS256"])
    assert claims["exp"] - claims["nbf"] <= 60 + 1
    assert datetime.datetime.fromtimestamp(claims["exp"]) > datetime.datetime.now()


@pytest.mark.timeout(60)
async def test_explicit_subscription_without_auto_subscribe(connect, subscriptions) -> None:
    """How the project's hidden agent listens: auto_subscribe off, then subscribe to one track."""
    from devserver_helpers import collect_audio, peak_hz

    agent = await connect("agent", auto_subscribe=False, hidden=True, can_publish=False)
    published = wait_event(agent, "track_published")
    user = await connect("user", can_subscribe=False, can_publish_sources=["microphone"])
    pub = asyncio.create_task(publish_tone(user, 440))
    try:
        publication, who = await asyncio.wait_for(published, 10)
        assert who.identity == "user"
        # The server announces a track and auto-subscribes in one step: nothing without asking.
        assert (await subscriptions())["agent"] == set()
        assert not agent.first_track.done()
        publication.set_subscribed(True)
        track, _, _ = await asyncio.wait_for(agent.first_track, 10)
        assert (await subscriptions())["agent"] == {publication.sid}
        samples = await asyncio.wait_for(collect_audio(track, 0.5), 10)
        assert abs(peak_hz(samples, 48000) - 440) <= 5
    finally:
        pub.cancel()


@pytest.mark.timeout(60)
async def test_stop_and_restart_on_the_same_port() -> None:
    """Stopping disconnects clients with SERVER_SHUTDOWN; a new server can take the port."""
    from roomscribe.devserver import DevServer

    async with running_devserver() as srv:
        port = srv.port
        a = rtc.Room()
        await a.connect(srv.url, make_token("alice", "r1"))
        gone = wait_event(a, "disconnected")
        await srv.stop()
        (reason,) = await asyncio.wait_for(gone, 10)
        assert reason == rtc.DisconnectReason.SERVER_SHUTDOWN
        again = DevServer(host="127.0.0.1", port=port, keys={"devkey": "secret"})
        await again.start()
        try:
            b = rtc.Room()
            await b.connect(again.url, make_token("bob", "r1"))
            await b.disconnect()
        finally:
            await again.stop()
