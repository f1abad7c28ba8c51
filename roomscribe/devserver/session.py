"""A participant's signalling session: one WebSocket, one :class:`Participant`, its media."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import WSMsgType, web
from aiortc.mediastreams import MediaStreamTrack
from livekit.protocol import models as m
from livekit.protocol import rtc as r

from .codec import decode_request, encode_response, parse_candidate_init
from .relay import OpusPassThrough, TrackRelay
from .room import Participant, Publication, Room
from .transport import MediaSession

log = logging.getLogger("roomscribe.devserver.session")


class Session:
    """Implements :class:`devserver.room.ParticipantLink` over a WebSocket and aiortc."""

    def __init__(self, ws: web.WebSocketResponse, room: Room, *, single_pc: bool,
                 ice_addresses: tuple[str, ...], ping_interval_s: int, ping_timeout_s: int,
                 low_latency_audio: bool = True) -> None:
        self.ws = ws
        self.room = room
        self.single_pc = single_pc
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s
        self.participant: Participant | None = None
        self.media: MediaSession | None = None
        self._ice_addresses = ice_addresses
        self._low_latency_audio = low_latency_audio
        self._out: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._relays: dict[str, TrackRelay] = {}  # msid track id -> relay
        self._closing = False
        self._done = asyncio.Event()

    # -- ParticipantLink -----------------------------------------------------------------
    def send(self, msg: r.SignalResponse) -> None:
        if not self._closing:
            self._out.put_nowait(encode_response(msg))

    def subscribe(self, pub: Publication) -> None:
        if self.media is not None and isinstance(pub.media, TrackRelay):
            self.media.subscribe(pub.sid, pub.publisher.sid, pub.media)

    def unsubscribe(self, track_sid: str) -> None:
        if self.media is not None:
            self.media.unsubscribe(track_sid)

    def send_data(self, payload: bytes, reliable: bool) -> None:
        if self.media is not None:
            self.media.send_data(payload, reliable)

    def close(self, reason: m.DisconnectReason) -> None:
        if self._closing:
            return
        self._out.put_nowait(encode_response(r.SignalResponse(leave=r.LeaveRequest(
            can_reconnect=False, reason=reason, action=r.LeaveRequest.DISCONNECT))))
        self._finish()

    def _finish(self) -> None:
        """Stop accepting messages for the client and let the writer drain and exit."""
        if not self._closing:
            self._closing = True
            self._out.put_nowait(None)

    # -- main loop -----------------------------------------------------------------------
    async def run(self, part: Participant, publisher_offer: r.SessionDescription | None) -> None:
        """Join the room, then serve the client until it leaves, dies or is removed."""
        self.participant = part
        self.media = MediaSession(
            single_pc=self.single_pc, send=self.send, participant_sid=part.sid,
            ice_addresses=self._ice_addresses, on_track=self._on_track,
            on_unpublished=self._on_unpublished, on_data=self._on_data,
            on_connected=lambda: self.room.mark_active(part), low_latency=self._low_latency_audio)
        writer = asyncio.ensure_future(self._writer())
        watchdog = asyncio.ensure_future(self._watchdog())
        try:
            self.send(self.room.join(part, ping_interval_s=self.ping_interval_s,
                                     ping_timeout_s=self.ping_timeout_s))
            self.room.start_subscriptions(part)
            if publisher_offer is not None and publisher_offer.sdp:
                await self.media.handle_offer(publisher_offer)
            async for msg in self.ws:
                if msg.type == WSMsgType.BINARY or msg.type == WSMsgType.TEXT:
                    await self._handle(decode_request(msg.data))
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
                if self._closing:
                    break
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("session of %s failed", part.identity)
        finally:
            watchdog.cancel()
            self.room.remove(part, notify_self=False)
            self._finish()
            try:
                await asyncio.wait_for(writer, 2)
            except (TimeoutError, Exception):
                writer.cancel()
            await self._release()

    async def _release(self) -> None:
        for relay in self._relays.values():
            relay.stop()
        self._relays.clear()
        if self.media is not None:
            await self.media.close()
        if not self.ws.closed:
            await self.ws.close()
        self._done.set()

    async def _writer(self) -> None:
        while True:
            data = await self._out.get()
            if data is None:
                break
            if self.ws.closed:
                break
            try:
                await self.ws.send_bytes(data)
            except (ConnectionError, RuntimeError):
                break
        if not self.ws.closed:
            await self.ws.close()

    async def _watchdog(self) -> None:
        """Remove the participant when its pings stop for longer than the ping timeout."""
        part = self.participant
        assert part is not None
        while True:
            await asyncio.sleep(min(1.0, self.ping_timeout_s / 4))
            if time.monotonic() - part.last_seen > self.ping_timeout_s:
                log.info("%s timed out (no ping for %ss)", part.identity, self.ping_timeout_s)
                self.room.remove(part, reason=m.DisconnectReason.SIGNAL_CLOSE)
                if not self.ws.closed:
                    await self.ws.close()
                return

    # -- client requests -----------------------------------------------------------------
    async def _handle(self, req: r.SignalRequest) -> None:
        part = self.participant
        media = self.media
        assert part is not None and media is not None
        kind = req.WhichOneof("message")
        part.touch()
        if kind == "offer":
            await media.handle_offer(req.offer)
        elif kind == "answer":
            await media.handle_answer(req.answer)
        elif kind == "trickle":
            cand, mid, idx = parse_candidate_init(req.trickle.candidateInit)
            await media.handle_trickle(cand, mid, idx, req.trickle.target)
        elif kind == "add_track":
            log.debug("add_track %s", req.add_track)
            resp = self.room.add_track(part, req.add_track)
            if resp is not None:
                self.send(resp)
                relay = self._relays.get(req.add_track.cid)
                pub = self.room.find_pending(part, req.add_track.cid)
                if relay is not None and pub is not None and not pub.ready:
                    self.room.media_ready(pub, relay)
        elif kind == "mute":
            self.room.set_muted(part, req.mute.sid, req.mute.muted)
        elif kind == "subscription":
            sids = list(req.subscription.track_sids)
            for pt in req.subscription.participant_tracks:
                sids.extend(pt.track_sids)
            self.room.update_subscription(part, sids, req.subscription.subscribe)
        elif kind == "leave":
            log.info("%s left room %s", part.identity, self.room.name)
            self.room.remove(part, reason=m.DisconnectReason.CLIENT_INITIATED, notify_self=False)
            self._finish()
        elif kind == "ping":
            self.send(r.SignalResponse(pong=int(time.time() * 1000)))
        elif kind == "ping_req":
            self.send(r.SignalResponse(pong_resp=r.Pong(
                last_ping_timestamp=req.ping_req.timestamp, timestamp=int(time.time() * 1000))))

    # -- media callbacks -----------------------------------------------------------------
    def _on_track(self, track: MediaStreamTrack, track_id: str, mid: str, packets: OpusPassThrough | None) -> None:
        part = self.participant
        assert part is not None
        pub = self.room.find_pending(part, track_id)
        relay = TrackRelay(track, pub.sid if pub else "", packets)
        self._relays[track_id] = relay
        if pub is None:
            log.warning("%s sent media for unknown track %s", part.identity, track_id)
            return
        self.room.media_ready(pub, relay, mid)

    def _on_unpublished(self, track_id: str) -> None:
        part = self.participant
        assert part is not None
        relay = self._relays.pop(track_id, None)
        pub = self.room.find_pending(part, track_id)
        if pub is not None:
            self.room.unpublish(pub)
        if relay is not None:
            relay.stop()

    def _on_data(self, payload: bytes, reliable: bool) -> None:
        part = self.participant
        if part is None:
            return
        try:
            packet = m.DataPacket.FromString(payload)
        except Exception:
            log.debug("bad data packet from %s", part.identity)
            return
        self.room.relay_data(part, packet, reliable)
