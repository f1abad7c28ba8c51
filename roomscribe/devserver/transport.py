"""One participant's WebRTC side on aiortc, in single-PC (``/rtc/v1``) or dual-PC (``/rtc``) mode.

Publisher PC: the client offers, the server answers (published tracks arrive here; the client's
``_reliable``/``_lossy`` data channels live here and carry data both ways).
Single PC: the same PC also carries subscriptions, on recvonly m-lines the client offered; the
server asks for more with ``MediaSectionsRequirement``. Dual PC: subscriptions go on a separate
subscriber PC that the server offers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiortc import RTCConfiguration, RTCDataChannel, RTCIceCandidate, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcrtptransceiver import RTCRtpTransceiver
from aiortc.sdp import candidate_from_sdp
from livekit.protocol import rtc as r

from . import netpolicy
from .relay import OpusPassThrough, TrackRelay, use_opus_pass_through

log = logging.getLogger("roomscribe.devserver.transport")

PUBLISHER = r.SignalTarget.PUBLISHER
SUBSCRIBER = r.SignalTarget.SUBSCRIBER


@dataclass
class _Sub:
    track_sid: str
    publisher_sid: str
    relay: TrackRelay
    transceiver: RTCRtpTransceiver | None = None


def msid_track_ids(sdp: str) -> dict[str, str]:
    """``{mid: msid track id}`` for every m-line with an ``a=msid`` (the client's track cid).

    aiortc only honours msid when ``a=msid-semantic`` lists the stream, which libwebrtc omits.
    """
    found: dict[str, str] = {}
    mid = msid = None
    for line in [*sdp.splitlines(), "m="]:
        if line.startswith("m="):
            if mid is not None and msid:
                found[mid] = msid
            mid = msid = None
        elif line.startswith("a=mid:"):
            mid = line[6:].strip()
        elif line.startswith("a=msid:"):
            parts = line[7:].split()
            if len(parts) >= 2:
                msid = parts[1]
    return found


def _new_pc() -> RTCPeerConnection:
    # iceServers=[] matters: None would make aiortc use a public STUN server.
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


def _set_msid(transceiver: RTCRtpTransceiver, stream_id: str, track_id: str) -> None:
    """aiortc writes ``a=msid:<sender._stream_id> <sender._track_id>``; the SDKs parse it."""
    transceiver.sender._stream_id = stream_id
    transceiver.sender._track_id = track_id


async def _start_stalled(pc: RTCPeerConnection) -> None:
    """Start senders/receivers negotiated while DTLS was still connecting (aiortc skips them)."""
    for t in pc.getTransceivers():
        direction = t.currentDirection
        try:
            if direction in ("sendonly", "sendrecv"):
                # aiortc's private (name-mangled) helpers: no public call starts a stalled transceiver
                await t.sender.send(pc._RTCPeerConnection__localRtp(t))  # type: ignore[attr-defined]  # private aiortc API
            if direction in ("recvonly", "sendrecv"):
                await t.receiver.receive(pc._RTCPeerConnection__remoteRtp(t))  # type: ignore[attr-defined]  # private aiortc API
        except Exception:  # pragma: no cover - diagnostic only
            log.debug("could not start transceiver %s", t.mid, exc_info=True)


class MediaSession:
    """The peer connection(s) of one participant and its subscriptions."""

    def __init__(self, *, single_pc: bool, send: Callable[[r.SignalResponse], None],
                 participant_sid: str, ice_addresses: tuple[str, ...],
                 on_track: Callable[[MediaStreamTrack, str, str, OpusPassThrough | None], None],
                 on_unpublished: Callable[[str], None],
                 on_data: Callable[[bytes, bool], None],
                 on_connected: Callable[[], None], low_latency: bool = True) -> None:
        self.single_pc = single_pc
        self._low_latency = low_latency
        self._send = send
        self._sid = participant_sid
        self._ice_addresses = ice_addresses
        self._allowed_remote = netpolicy.own_addresses()
        self._on_track = on_track
        self._on_unpublished = on_unpublished
        self._on_data = on_data
        self._on_connected = on_connected
        self._connected = False
        self._closed = False
        self.pub = self._make_pc(PUBLISHER)
        self.sub = None if single_pc else self._make_pc(SUBSCRIBER)
        self._pub_lock = asyncio.Lock()
        self._sub_lock = asyncio.Lock()
        self._channels: dict[str, RTCDataChannel] = {}
        self._published: dict[str, RTCRtpTransceiver] = {}  # msid track id -> transceiver
        self._subs: dict[str, _Sub] = {}
        # single PC: subscriptions waiting for a client m-line, and whether we asked for one
        self._pending: list[_Sub] = []
        self._sections_requested = False
        self._release = False
        self._used_mids: set[str] = set()
        # dual PC: subscriber negotiation state
        self._sub_waiting_answer = False
        self._sub_again = False
        self._tasks: set[asyncio.Task] = set()
        self._msid_by_mid: dict[str, str] = {}
        self._early: dict[int, list[RTCIceCandidate]] = {}

    # -- setup ---------------------------------------------------------------------------
    def _make_pc(self, target: int) -> RTCPeerConnection:
        pc = _new_pc()

        @pc.on("connectionstatechange")
        async def _state() -> None:
            log.debug("%s %s pc: %s", self._sid, "pub" if target == PUBLISHER else "sub", pc.connectionState)
            if pc.connectionState == "connected":
                await _start_stalled(pc)
                if not self._connected and target == PUBLISHER:
                    self._connected = True
                    self._on_connected()

        if target == PUBLISHER:
            @pc.on("track")
            def _track(track) -> None:
                transceiver = next((t for t in pc.getTransceivers() if t.receiver.track is track), None)
                mid = transceiver.mid if transceiver is not None else None
                track_id = self._msid_by_mid.get(mid or "", track.id)
                packets: OpusPassThrough | None = None
                if transceiver is not None:
                    self._published[track_id] = transceiver
                    if self._low_latency:
                        packets = use_opus_pass_through(transceiver.receiver)
                self._on_track(track, track_id, mid or "", packets)

            @pc.on("datachannel")
            def _channel(channel) -> None:
                label = channel.label
                self._channels[label] = channel
                reliable = label == "_reliable"

                @channel.on("message")
                def _message(data) -> None:
                    if isinstance(data, (bytes, bytearray)) and label in ("_reliable", "_lossy"):
                        self._on_data(bytes(data), reliable)
        return pc

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and not self._closed:
            log.error("media task of %s failed", self._sid, exc_info=task.exception())

    # -- publisher PC (client offers) ----------------------------------------------------
    async def handle_offer(self, offer: r.SessionDescription) -> None:
        """Answer a client offer on the publisher PC (the only PC in single-PC mode)."""
        async with self._pub_lock:
            if self._closed:
                return
            sdp = netpolicy.filter_sdp_candidates(offer.sdp, self._allowed_remote)
            log.debug("offer from %s:\n%s", self._sid, sdp)
            self._msid_by_mid.update(msid_track_ids(sdp))
            netpolicy.use_host_addresses(self._ice_addresses)
            await self.pub.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            await self._flush_early(self.pub)
            self._check_unpublished()
            mapping: dict[str, str] = {}
            if self.single_pc:
                self._assign_pending()
                mapping = {s.transceiver.mid: s.track_sid for s in self._subs.values()
                           if s.transceiver is not None and s.transceiver.mid}
            answer = await self.pub.createAnswer()
            await self.pub.setLocalDescription(answer)
            local = self.pub.localDescription
            self._send(r.SignalResponse(answer=r.SessionDescription(
                type="answer", sdp=local.sdp, id=offer.id, mid_to_track_id=mapping)))
            if self.single_pc:
                self._sections_requested = False
                self._release = False
                self._request_sections()

    def _check_unpublished(self) -> None:
        for track_id, t in list(self._published.items()):
            if t._offerDirection not in ("recvonly", "sendrecv"):  # client stopped sending
                del self._published[track_id]
                self._on_unpublished(track_id)

    # -- single PC subscriptions -----------------------------------------------------------
    def _free_audio_transceivers(self, kind: str) -> list[RTCRtpTransceiver]:
        busy = {id(s.transceiver) for s in self._subs.values() if s.transceiver is not None}
        free = [t for t in self.pub.getTransceivers()
                if t.kind == kind and t._offerDirection in ("sendonly", "sendrecv")
                and t.receiver.track is None and id(t) not in busy and not t.stopped]
        free.sort(key=lambda t: t.mid in self._used_mids)  # prefer never-used m-lines
        return free

    def _assign_pending(self) -> None:
        still: list[_Sub] = []
        for sub in self._pending:
            if sub.track_sid not in self._subs:
                continue
            free = self._free_audio_transceivers(sub.relay.kind)
            if not free:
                still.append(sub)
                continue
            t = free[0]
            t.direction = "sendonly"
            t.sender.replaceTrack(sub.relay.add_output(self._sid))
            _set_msid(t, f"{sub.publisher_sid}|{sub.track_sid}", sub.track_sid)
            sub.transceiver = t
            if t.mid:
                self._used_mids.add(t.mid)
        self._pending = still

    def _request_sections(self) -> None:
        """Ask the client to re-offer (at most once per client offer): for more recvonly m-lines
        when subscriptions wait for one, or with zero new lines so an unsubscribed m-line goes
        inactive on the client before it could be confused with a later subscription."""
        if not (self._pending or self._release) or self._sections_requested or self._closed:
            return
        self._release = False
        audios = sum(1 for s in self._pending if s.relay.kind == "audio")
        videos = len(self._pending) - audios
        self._sections_requested = True
        self._send(r.SignalResponse(media_sections_requirement=r.MediaSectionsRequirement(
            num_audios=audios, num_videos=videos)))

    # -- subscriptions (both modes) ------------------------------------------------------
    def subscribe(self, track_sid: str, publisher_sid: str, relay: TrackRelay) -> None:
        """Start sending ``relay``'s media to the client."""
        if self._closed or track_sid in self._subs:
            return
        sub = _Sub(track_sid, publisher_sid, relay)
        self._subs[track_sid] = sub
        if self.single_pc:
            self._pending.append(sub)
            self._request_sections()
        else:
            assert self.sub is not None
            t = self.sub.addTransceiver(relay.add_output(self._sid), direction="sendonly")
            _set_msid(t, f"{publisher_sid}|{track_sid}", track_sid)
            sub.transceiver = t
            self._spawn(self._negotiate_sub())

    def unsubscribe(self, track_sid: str) -> None:
        """Stop sending a track; its m-line goes idle."""
        sub = self._subs.pop(track_sid, None)
        if sub is None:
            return
        sub.relay.remove_output(self._sid)
        if sub in self._pending:
            self._pending.remove(sub)
        t = sub.transceiver
        if t is not None:
            t.sender.replaceTrack(None)
            t.direction = "recvonly" if self.single_pc else "inactive"
            if self.single_pc:
                self._release = True
                self._request_sections()
            else:
                self._spawn(self._negotiate_sub())

    async def _negotiate_sub(self) -> None:
        """Dual PC: offer the subscriber PC; one offer in flight at a time."""
        assert self.sub is not None
        async with self._sub_lock:
            if self._closed:
                return
            if self._sub_waiting_answer:
                self._sub_again = True
                return
            self._sub_waiting_answer = True
            self._sub_again = False
            netpolicy.use_host_addresses(self._ice_addresses)
            offer = await self.sub.createOffer()
            await self.sub.setLocalDescription(offer)
            self._send(r.SignalResponse(offer=r.SessionDescription(
                type="offer", sdp=self.sub.localDescription.sdp)))

    async def handle_answer(self, answer: r.SessionDescription) -> None:
        """Dual PC: the client's answer to our subscriber offer."""
        if self.sub is None:
            return
        async with self._sub_lock:
            if self._closed or not self._sub_waiting_answer:
                return
            sdp = netpolicy.filter_sdp_candidates(answer.sdp, self._allowed_remote)
            await self.sub.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
            await self._flush_early(self.sub)
            self._sub_waiting_answer = False
            again = self._sub_again
        if again:
            await self._negotiate_sub()

    # -- ICE -----------------------------------------------------------------------------
    async def handle_trickle(self, candidate: str, sdp_mid: str | None, mline: int | None,
                             target: int) -> None:
        """Add a client candidate if it points at this machine."""
        if not candidate or self._closed:
            return
        if not netpolicy.candidate_is_local(candidate, self._allowed_remote):
            log.debug("ignoring non-local candidate %s", candidate)
            return
        pc, lock = (self.sub, self._sub_lock) if (target == SUBSCRIBER and self.sub) else (self.pub, self._pub_lock)
        cand = candidate_from_sdp(candidate[10:] if candidate.startswith("candidate:") else candidate)
        cand.sdpMid = sdp_mid
        cand.sdpMLineIndex = mline
        async with lock:
            if pc.remoteDescription is None:  # trickled before the offer/answer: keep for later
                self._early.setdefault(id(pc), []).append(cand)
                return
            await self._add_candidate(pc, cand)

    async def _add_candidate(self, pc: RTCPeerConnection, cand: RTCIceCandidate) -> None:
        try:
            await pc.addIceCandidate(cand)
        except Exception as exc:  # unknown mid etc.: not fatal, ICE also learns peer-reflexively
            log.debug("addIceCandidate failed: %s", exc)

    async def _flush_early(self, pc: RTCPeerConnection) -> None:
        for cand in self._early.pop(id(pc), []):
            await self._add_candidate(pc, cand)

    # -- data ----------------------------------------------------------------------------
    def send_data(self, payload: bytes, reliable: bool) -> None:
        """Send a DataPacket to the client over its own data channel."""
        channel = self._channels.get("_reliable" if reliable else "_lossy")
        if channel is None or channel.readyState != "open":
            channel = self._channels.get("_reliable")
        if channel is not None and channel.readyState == "open":
            channel.send(payload)

    # -- teardown ------------------------------------------------------------------------
    async def close(self) -> None:
        """Stop subscriptions and close the peer connection(s)."""
        if self._closed:
            return
        self._closed = True
        for sid in list(self._subs):
            sub = self._subs.pop(sid)
            sub.relay.remove_output(self._sid)
        for task in list(self._tasks):
            task.cancel()
        for pc in (self.pub, self.sub):
            if pc is not None:
                try:
                    await asyncio.wait_for(pc.close(), 5)
                except Exception:  # pragma: no cover
                    log.debug("pc close failed", exc_info=True)
