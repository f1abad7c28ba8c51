"""Protocol logic without sockets: codec, auth, room rules, network policy, relay."""

from __future__ import annotations

import asyncio
import base64
import gzip
from typing import Any

import numpy as np
import pytest
from livekit.protocol import models as m
from livekit.protocol import rtc as r

from devserver_helpers import make_token
from roomscribe.devserver import netpolicy
from roomscribe.devserver.auth import Authenticator, AuthError, JoinGrant
from roomscribe.devserver.codec import candidate_init_json, decode_join_request, parse_candidate_init, parse_join_params
from roomscribe.devserver.relay import RelayedTrack, audio_level_dbov
from roomscribe.devserver.room import Participant, Room, RoomManager
from roomscribe.devserver.transport import msid_track_ids


class FakeLink:
    """Records what the room sends to one participant."""

    def __init__(self) -> None:
        self.sent: list[r.SignalResponse] = []
        self.subscribed: list[str] = []
        self.unsubscribed: list[str] = []
        self.data: list[tuple[bytes, bool]] = []
        self.closed: int | None = None

    def send(self, msg: r.SignalResponse) -> None:
        self.sent.append(msg)

    def subscribe(self, pub) -> None:
        self.subscribed.append(pub.sid)

    def unsubscribe(self, track_sid: str) -> None:
        self.unsubscribed.append(track_sid)

    def send_data(self, payload: bytes, reliable: bool) -> None:
        self.data.append((payload, reliable))

    def close(self, reason: int) -> None:
        self.closed = reason

    def updates(self) -> list[m.ParticipantInfo]:
        return [p for msg in self.sent if msg.WhichOneof("message") == "update"
                for p in msg.update.participants]


def grant(identity: str, **kw: Any) -> JoinGrant:
    return JoinGrant(identity=identity, name=identity, room="r", **kw)


def join(room: Room, identity: str, **kw: object) -> tuple[Participant, FakeLink]:
    link = FakeLink()
    part = Participant(grant=grant(identity, **kw), link=link)
    link.sent.append(room.join(part, ping_interval_s=5, ping_timeout_s=15))
    room.start_subscriptions(part)
    return part, link


def publish(room: Room, part: Participant, cid: str = "cid1") -> str:
    resp = room.add_track(part, r.AddTrackRequest(cid=cid, name="mic", type=m.TrackType.AUDIO,
                                                  source=m.TrackSource.MICROPHONE))
    assert resp is not None
    pub = room.find_pending(part, cid)
    assert pub is not None
    room.media_ready(pub, object(), "0")
    return resp.track_published.track.sid


# -- codec -----------------------------------------------------------------------------
def _wrapped(req: r.JoinRequest, compress: bool, pad: bool) -> str:
    raw = req.SerializeToString()
    wrapped = r.WrappedJoinRequest(join_request=gzip.compress(raw) if compress else raw,
                                   compression=r.WrappedJoinRequest.GZIP if compress else r.WrappedJoinRequest.NONE)
    text = base64.urlsafe_b64encode(wrapped.SerializeToString()).decode()
    return text if pad else text.rstrip("=")


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("pad", [True, False])
def test_join_request_decodes(compress: bool, pad: bool) -> None:
    req = r.JoinRequest(connection_settings=r.ConnectionSettings(auto_subscribe=False),
                        publisher_offer=r.SessionDescription(type="offer", sdp="v=0"))
    req.client_info.protocol = 16
    got = decode_join_request(_wrapped(req, compress, pad))
    assert got.publisher_offer.sdp == "v=0" and got.client_info.protocol == 16
    params = parse_join_params({"join_request": _wrapped(req, compress, pad), "access_token": "t"}, {}, True)
    assert params.token == "t" and not params.auto_subscribe and params.publisher_offer is not None


def test_v0_params_and_bearer_header() -> None:
    p = parse_join_params({"auto_subscribe": "0", "sdk": "js", "protocol": "17"},
                          {"Authorization": "Bearer tok"}, False)
    assert (p.token, p.auto_subscribe, p.sdk, p.protocol, p.single_pc) == ("tok", False, "js", 17, False)


def test_trickle_json_round_trip() -> None:
    text = candidate_init_json("candidate:1 1 udp 1 127.0.0.1 5000 typ host", "0", 0)
    assert parse_candidate_init(text) == ("candidate:1 1 udp 1 127.0.0.1 5000 typ host", "0", 0)


def test_msid_track_ids() -> None:
    sdp = "v=0\r\nm=audio 9 X 111\r\na=mid:0\r\na=recvonly\r\nm=audio 9 X 111\r\na=mid:7\r\na=msid:- cid-7\r\n"
    assert msid_track_ids(sdp) == {"7": "cid-7"}


# -- auth ------------------------------------------------------------------------------
def test_auth_grants_and_refusals() -> None:
    auth = Authenticator({"devkey": "secret"})
    g = auth.verify_join(make_token("a", "r", can_publish=False, hidden=True,
                                    can_publish_sources=["microphone"]))
    assert (g.identity, g.room, g.can_publish, g.hidden, g.can_publish_sources) == \
        ("a", "r", False, True, ("microphone",))
    with pytest.raises(AuthError, match="not 'other'"):
        auth.verify_join(make_token("a", "r"), "other")
    with pytest.raises(AuthError, match="expired"):
        auth.verify_join(make_token("a", "r", ttl_s=-600))
    with pytest.raises(AuthError, match="no access token"):
        auth.verify_join(None)


# -- room rules ------------------------------------------------------------------------
async def test_join_publish_subscribe_leave() -> None:
    room = Room("r", empty_timeout_s=60)
    _bob, bob_link = join(room, "bob")
    alice, alice_link = join(room, "alice")
    assert bob_link.updates()[-1].identity == "alice"
    sid = publish(room, alice)
    assert bob_link.subscribed == [sid]
    assert bob_link.updates()[-1].tracks[0].sid == sid
    _carol, carol_link = join(room, "carol")
    assert carol_link.subscribed == [sid]
    joined = carol_link.sent[0].join
    assert {p.identity for p in joined.other_participants} == {"alice", "bob"}
    assert joined.ping_interval > 0 and joined.ping_timeout > 0
    room.remove(alice)
    assert bob_link.unsubscribed == [sid] and carol_link.unsubscribed == [sid]
    assert bob_link.updates()[-1].state == m.ParticipantInfo.DISCONNECTED
    assert alice_link.closed == m.DisconnectReason.CLIENT_INITIATED


async def test_permissions_hidden_and_duplicates() -> None:
    room = Room("r", empty_timeout_s=60)
    _viewer, viewer_link = join(room, "viewer", can_subscribe=False)
    _ghost, ghost_link = join(room, "ghost", hidden=True)
    alice, _ = join(room, "alice", can_publish_sources=("microphone",))
    sid = publish(room, alice)
    assert viewer_link.subscribed == [] and ghost_link.subscribed == [sid]
    assert all(p.identity != "ghost" for p in viewer_link.updates())
    cam = room.add_track(alice, r.AddTrackRequest(cid="c2", type=m.TrackType.VIDEO,
                                                  source=m.TrackSource.CAMERA))
    assert cam is None
    again, _ = join(room, "alice")
    assert room.participants["alice"] is again
    assert viewer_link.updates()[-2].sid == alice.sid
    assert viewer_link.updates()[-2].state == m.ParticipantInfo.DISCONNECTED


async def test_data_relay_rules() -> None:
    room = Room("r", empty_timeout_s=60)
    a, _ = join(room, "a")
    _b, b_link = join(room, "b")
    _c, c_link = join(room, "c")
    quiet, _ = join(room, "quiet", can_publish_data=False)
    pkt = m.DataPacket(user=m.UserPacket(payload=b"x"), destination_identities=["c"])
    assert room.relay_data(a, pkt, True) == 1
    got = m.DataPacket.FromString(c_link.data[0][0])
    assert got.participant_identity == "a" and got.user.participant_identity == "a"
    assert b_link.data == []
    assert room.relay_data(quiet, m.DataPacket(user=m.UserPacket(payload=b"y")), False) == 0


async def test_empty_timeout_closes_room() -> None:
    rooms = RoomManager(empty_timeout_s=0.05)
    room = rooms.get_or_create("r")
    a, _ = join(room, "a")
    await asyncio.sleep(0.1)
    assert rooms.get("r") is room
    room.remove(a)
    await asyncio.sleep(0.1)
    assert rooms.get("r") is None and room.closed


# -- network policy and relay ----------------------------------------------------------
def test_remote_candidates_must_be_local() -> None:
    own = netpolicy.own_addresses()
    assert netpolicy.candidate_is_local("candidate:1 1 udp 2122260223 127.0.0.1 5000 typ host", own)
    assert not netpolicy.candidate_is_local("candidate:1 1 udp 2122260223 8.8.8.8 5000 typ host", own)
    assert not netpolicy.candidate_is_local("candidate:1 1 udp 2122260223 abc.local 5000 typ host", own)
    sdp = "a=mid:0\r\na=candidate:1 1 udp 1 8.8.8.8 1 typ srflx\r\na=candidate:2 1 udp 1 127.0.0.1 1 typ host"
    assert "8.8.8.8" not in netpolicy.filter_sdp_candidates(sdp, own)
    assert "127.0.0.1" in netpolicy.filter_sdp_candidates(sdp, own)


def test_fast_audio_level_matches_aiortc() -> None:
    import av

    from roomscribe.devserver.relay import aiortc_audio_level_dbov as compute_audio_level_dbov

    for amp in (0.0, 0.001, 0.1, 0.9):
        samples = (np.sin(np.arange(1920) / 7) * amp * 32767).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="stereo")
        assert audio_level_dbov(frame) == compute_audio_level_dbov(frame)


async def test_relayed_track_drops_oldest_when_full() -> None:
    track = RelayedTrack("audio", "TR_x")
    for i in range(20):
        track.push(i)
    assert track.dropped == 15
    assert await track.recv() == 15


def test_opus_pass_through_forwards_packets_in_order_and_drops_late() -> None:
    from aiortc.rtp import RtpPacket

    from roomscribe.devserver.relay import OPUS_TIME_BASE, OpusPassThrough

    buf = OpusPassThrough()
    out: list = []
    buf.sink = out.append
    start = 0xFFFFFFFF - 960  # the RTP timestamp wraps after the second packet
    for seq in (65534, 65535, 0, 65535, 2, 1, 3):
        p = RtpPacket(sequence_number=seq, timestamp=(start + uint16_steps(seq) * 960) & 0xFFFFFFFF)
        p.payload = bytes([seq % 256, 0xAB])
        assert buf.add(p) == (False, None)  # nothing for aiortc's decoder
    assert [bytes(packet)[0] for packet in out] == [254, 255, 0, 2, 3]
    assert [packet.pts for packet in out] == [0, 960, 1920, 3840, 4800]  # unwrapped across the wrap
    assert all(packet.time_base == OPUS_TIME_BASE for packet in out)


def uint16_steps(seq: int) -> int:
    """Packets since sequence number 65534."""
    return (seq - 65534) & 0xFFFF


async def test_mute_is_announced() -> None:
    room = Room("r", empty_timeout_s=60)
    _bob, bob_link = join(room, "bob")
    alice, _ = join(room, "alice")
    sid = publish(room, alice)
    room.set_muted(alice, sid, True)
    assert bob_link.updates()[-1].tracks[0].muted
    room.unpublish(alice.publications[sid])
    assert bob_link.updates()[-1].tracks == [] and bob_link.unsubscribed == [sid]


def test_cli_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    from roomscribe.devserver.cli import KEYS_ENV, build_parser

    assert build_parser().parse_args(["--keys", "a:x,b:y"]).keys == {"a": "x", "b": "y"}
    monkeypatch.setenv(KEYS_ENV, "k:s")
    assert build_parser().parse_args([]).keys == {"k": "s"}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--keys", "nosecret"])
