"""Room and participant state plus the room's rules (join, publish, subscribe, leave, data).

Nothing here touches sockets or WebRTC: a participant's connection is a :class:`ParticipantLink`
that the signalling layer implements, and tests can implement with plain lists.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from livekit.protocol import models as m
from livekit.protocol import rtc as r

from .auth import AuthError, JoinGrant
from .codec import new_id

log = logging.getLogger("roomscribe.devserver.room")

SERVER_VERSION = "1.9.0"
_SOURCE_NAMES = {
    m.TrackSource.CAMERA: "camera",
    m.TrackSource.MICROPHONE: "microphone",
    m.TrackSource.SCREEN_SHARE: "screen_share",
    m.TrackSource.SCREEN_SHARE_AUDIO: "screen_share_audio",
}
_KINDS = {"agent": m.ParticipantInfo.AGENT, "sip": m.ParticipantInfo.SIP,
          "ingress": m.ParticipantInfo.INGRESS, "egress": m.ParticipantInfo.EGRESS}


class ParticipantLink(Protocol):
    """What a room needs from a participant's connection (implemented by the signal session)."""

    def send(self, msg: r.SignalResponse) -> None:
        """Queue a signalling message for the client."""

    def subscribe(self, pub: Publication) -> None:
        """Start forwarding ``pub``'s media to the client."""

    def unsubscribe(self, track_sid: str) -> None:
        """Stop forwarding a track to the client."""

    def send_data(self, payload: bytes, reliable: bool) -> None:
        """Send a serialized DataPacket over the client's data channel."""

    def close(self, reason: m.DisconnectReason) -> None:
        """Disconnect the client (sends ``leave`` with ``reason``) and release its media."""


_version_counter = 0


def _next_version() -> int:
    global _version_counter
    _version_counter += 1
    return _version_counter


@dataclass
class Publication:
    """A track a participant publishes; ``media`` is the relay object the media layer attaches."""

    info: m.TrackInfo
    publisher: Participant
    cid: str
    media: Any = None

    @property
    def sid(self) -> str:
        return self.info.sid

    @property
    def ready(self) -> bool:
        return self.media is not None


@dataclass
class Participant:
    """One connected client in a room."""

    grant: JoinGrant
    link: ParticipantLink
    auto_subscribe: bool = True
    sid: str = field(default_factory=lambda: new_id("PA_"))
    state: m.ParticipantInfo.State = m.ParticipantInfo.JOINED
    joined_at: float = field(default_factory=time.time)
    publications: dict[str, Publication] = field(default_factory=dict)
    subscriptions: set[str] = field(default_factory=set)
    version: int = field(default_factory=_next_version)
    last_seen: float = field(default_factory=time.monotonic)

    @property
    def identity(self) -> str:
        return self.grant.identity

    @property
    def hidden(self) -> bool:
        return self.grant.hidden

    def permission(self) -> m.ParticipantPermission:
        """The grant as a ParticipantPermission message."""
        sources = [s for s, n in _SOURCE_NAMES.items() if n in self.grant.can_publish_sources]
        return m.ParticipantPermission(
            can_subscribe=self.grant.can_subscribe, can_publish=self.grant.can_publish,
            can_publish_data=self.grant.can_publish_data, can_publish_sources=sources,
            hidden=self.grant.hidden, agent=self.grant.agent,
        )

    def info(self) -> m.ParticipantInfo:
        """The participant as others (and itself) see it."""
        tracks = [p.info for p in self.publications.values() if p.ready]
        return m.ParticipantInfo(
            sid=self.sid, identity=self.identity, name=self.grant.name, state=self.state,
            tracks=tracks, metadata=self.grant.metadata, joined_at=int(self.joined_at),
            joined_at_ms=int(self.joined_at * 1000), version=self.version,
            permission=self.permission(), is_publisher=bool(tracks),
            kind=_KINDS.get(self.grant.kind, m.ParticipantInfo.STANDARD),
            attributes=self.grant.attributes,
        )

    def touch(self) -> None:
        """Record that the client is alive (a ping arrived)."""
        self.last_seen = time.monotonic()

    def bump(self) -> None:
        """Mark the participant's info as changed."""
        self.version = _next_version()

    def may_publish(self, source: m.TrackSource) -> str | None:
        """Return why publishing ``source`` is refused, or ``None`` if allowed."""
        if not self.grant.can_publish:
            return "token does not allow publishing (canPublish is false)"
        allowed = self.grant.can_publish_sources
        if allowed and _SOURCE_NAMES.get(source, "unknown") not in allowed:
            return f"token does not allow publishing source {_SOURCE_NAMES.get(source, source)!r}"
        return None


def _update(*infos: m.ParticipantInfo) -> r.SignalResponse:
    return r.SignalResponse(update=r.ParticipantUpdate(participants=list(infos)))


class Room:
    """A room: its participants and the rules that connect them."""

    def __init__(self, name: str, *, empty_timeout_s: float, max_participants: int = 0,
                 metadata: str = "", on_empty: Callable[[Room], None] | None = None) -> None:
        self.name = name
        self.sid = new_id("RM_")
        self.created = time.time()
        self.empty_timeout_s = empty_timeout_s
        self.max_participants = max_participants
        self.metadata = metadata
        self.participants: dict[str, Participant] = {}
        self.closed = False
        self._on_empty = on_empty
        self._empty_handle: asyncio.TimerHandle | None = None
        self._arm_empty_timer()

    # -- info ---------------------------------------------------------------------------
    def info(self) -> m.Room:
        """The room as a Room message."""
        return m.Room(
            sid=self.sid, name=self.name, empty_timeout=int(self.empty_timeout_s),
            departure_timeout=int(self.empty_timeout_s), max_participants=self.max_participants,
            creation_time=int(self.created), creation_time_ms=int(self.created * 1000),
            metadata=self.metadata, num_participants=len(self.visible()),
            num_publishers=sum(1 for p in self.visible() if p.publications),
        )

    def visible(self, exclude: Participant | None = None) -> list[Participant]:
        """Participants others may see (not hidden), minus ``exclude``."""
        return [p for p in self.participants.values() if not p.hidden and p is not exclude]

    def others(self, me: Participant) -> list[Participant]:
        """Everyone connected except ``me`` (hidden ones included: they still receive)."""
        return [p for p in self.participants.values() if p is not me]

    def by_sid(self, sid: str) -> Participant | None:
        return next((p for p in self.participants.values() if p.sid == sid), None)

    def publication(self, track_sid: str) -> Publication | None:
        for p in self.participants.values():
            if track_sid in p.publications:
                return p.publications[track_sid]
        return None

    # -- lifecycle -----------------------------------------------------------------------
    def join(self, part: Participant, *, ping_interval_s: int, ping_timeout_s: int) -> r.SignalResponse:
        """Admit ``part`` (replacing a duplicate identity) and return its JoinResponse."""
        if self.closed:
            raise AuthError(404, "requested room does not exist (it was closed)")
        old = self.participants.get(part.identity)
        if old is not None:
            log.info("room %s: identity %r rejoined, replacing %s", self.name, part.identity, old.sid)
            self.remove(old, reason=m.DisconnectReason.DUPLICATE_IDENTITY)
        if self.max_participants and len(self.participants) >= self.max_participants:
            raise AuthError(403, f"room {self.name!r} is full ({self.max_participants} participants)")
        self.participants[part.identity] = part
        self._cancel_empty_timer()
        others = [p.info() for p in self.visible(exclude=part)]
        join = r.JoinResponse(
            room=self.info(), participant=part.info(), other_participants=others,
            server_version=SERVER_VERSION, subscriber_primary=False,
            ping_interval=ping_interval_s, ping_timeout=ping_timeout_s,
            server_info=m.ServerInfo(edition=m.ServerInfo.Standard, version=SERVER_VERSION,
                                     protocol=16, node_id="devserver"),
        )
        if not part.hidden:
            self.broadcast(_update(part.info()), exclude=part)
        return r.SignalResponse(join=join)

    def start_subscriptions(self, part: Participant) -> None:
        """Auto-subscribe a newly joined participant to every ready track."""
        if not (part.auto_subscribe and part.grant.can_subscribe):
            return
        for other in self.visible(exclude=part):
            for pub in other.publications.values():
                if pub.ready:
                    self._subscribe(part, pub)

    def mark_active(self, part: Participant) -> None:
        """The participant's media connection is up: announce it as ACTIVE."""
        if part.state == m.ParticipantInfo.ACTIVE or part.identity not in self.participants:
            return
        part.state = m.ParticipantInfo.ACTIVE
        part.bump()
        if not part.hidden:
            self.broadcast(_update(part.info()), exclude=part)

    def remove(self, part: Participant, *, reason: m.DisconnectReason = m.DisconnectReason.CLIENT_INITIATED,
               notify_self: bool = True) -> None:
        """Take ``part`` out of the room; tell others; drop its subscriptions and publications."""
        if self.participants.get(part.identity) is not part:
            return
        del self.participants[part.identity]
        for pub in list(part.publications.values()):
            self._drop_subscribers(pub)
        part.publications.clear()
        part.subscriptions.clear()
        part.state = m.ParticipantInfo.DISCONNECTED
        part.bump()
        if notify_self:
            part.link.close(reason)
        if not part.hidden:
            info = part.info()
            info.disconnect_reason = reason
            self.broadcast(_update(info))
        if not self.participants:
            self._arm_empty_timer()

    def close(self, reason: m.DisconnectReason = m.DisconnectReason.ROOM_DELETED) -> None:
        """Disconnect everyone and mark the room closed."""
        self.closed = True
        self._cancel_empty_timer()
        for part in list(self.participants.values()):
            self.remove(part, reason=reason)

    # -- publishing ----------------------------------------------------------------------
    def add_track(self, part: Participant, req: r.AddTrackRequest) -> r.SignalResponse | None:
        """Handle AddTrackRequest: reserve a track sid; reply TrackPublishedResponse."""
        refusal = part.may_publish(req.source)
        if refusal:
            log.warning("room %s: %s may not publish: %s", self.name, part.identity, refusal)
            return None
        for pub in part.publications.values():
            if pub.cid == req.cid:
                return r.SignalResponse(track_published=r.TrackPublishedResponse(cid=req.cid, track=pub.info))
        mime = "audio/opus" if req.type == m.TrackType.AUDIO else "video/VP8"
        info = m.TrackInfo(
            sid=new_id("TR_"), type=req.type, name=req.name, muted=req.muted, width=req.width,
            height=req.height, disable_dtx=req.disable_dtx, source=req.source, mime_type=mime,
            stereo=req.stereo, disable_red=True, stream=req.stream,
            audio_features=list(req.audio_features),
        )
        part.publications[info.sid] = Publication(info=info, publisher=part, cid=req.cid)
        return r.SignalResponse(track_published=r.TrackPublishedResponse(cid=req.cid, track=info))

    def find_pending(self, part: Participant, track_id: str) -> Publication | None:
        """The publication a newly arrived media track (msid track id = cid or sid) belongs to."""
        for pub in part.publications.values():
            if track_id in (pub.cid, pub.sid):
                return pub
        return None

    def media_ready(self, pub: Publication, media: Any, mid: str = "") -> None:
        """Media for ``pub`` started arriving: announce the track and auto-subscribe others."""
        part = pub.publisher
        if self.participants.get(part.identity) is not part:
            return
        pub.media = media
        if mid:
            pub.info.mid = mid
        part.bump()
        if part.hidden:
            return
        self.broadcast(_update(part.info()), exclude=part)
        for other in self.others(part):
            if other.auto_subscribe and other.grant.can_subscribe:
                self._subscribe(other, pub)

    def unpublish(self, pub: Publication) -> None:
        """The publisher stopped the track: drop it everywhere and tell others."""
        part = pub.publisher
        if part.publications.pop(pub.sid, None) is None:
            return
        was_ready = pub.ready
        self._drop_subscribers(pub)
        part.bump()
        if was_ready and not part.hidden and self.participants.get(part.identity) is part:
            self.broadcast(_update(part.info()), exclude=part)

    def set_muted(self, part: Participant, track_sid: str, muted: bool) -> None:
        """MuteTrackRequest from the publisher."""
        pub = part.publications.get(track_sid)
        if pub is None or pub.info.muted == muted:
            return
        pub.info.muted = muted
        part.bump()
        if pub.ready and not part.hidden:
            self.broadcast(_update(part.info()), exclude=part)

    # -- subscribing ---------------------------------------------------------------------
    def update_subscription(self, part: Participant, track_sids: Iterable[str], subscribe: bool) -> None:
        """UpdateSubscription from a client (or the RoomService)."""
        for sid in track_sids:
            pub = self.publication(sid)
            if pub is None or pub.publisher is part:
                continue
            if subscribe:
                self._subscribe(part, pub)
            elif sid in part.subscriptions:
                part.subscriptions.discard(sid)
                part.link.unsubscribe(sid)

    def _subscribe(self, part: Participant, pub: Publication) -> None:
        if not part.grant.can_subscribe or not pub.ready or pub.sid in part.subscriptions:
            return
        if pub.publisher.hidden:
            return
        part.subscriptions.add(pub.sid)
        part.link.subscribe(pub)

    def _drop_subscribers(self, pub: Publication) -> None:
        for other in self.participants.values():
            if pub.sid in other.subscriptions:
                other.subscriptions.discard(pub.sid)
                other.link.unsubscribe(pub.sid)

    # -- data ----------------------------------------------------------------------------
    def relay_data(self, part: Participant, packet: m.DataPacket, reliable: bool) -> int:
        """Forward a client's DataPacket to the others (or its destinations). Returns count."""
        if not part.grant.can_publish_data:
            return 0
        packet.participant_identity = part.identity
        packet.participant_sid = part.sid
        if packet.HasField("user"):
            packet.user.participant_identity = part.identity
            packet.user.participant_sid = part.sid
        dests = set(packet.destination_identities)
        if packet.HasField("user"):
            dests |= set(packet.user.destination_identities)
        payload = packet.SerializeToString()
        sent = 0
        for other in self.others(part):
            if dests and other.identity not in dests:
                continue
            other.link.send_data(payload, reliable)
            sent += 1
        return sent

    # -- messaging -----------------------------------------------------------------------
    def broadcast(self, msg: r.SignalResponse, exclude: Participant | None = None) -> None:
        """Send ``msg`` to every participant except ``exclude``."""
        for p in list(self.participants.values()):
            if p is not exclude:
                p.link.send(msg)

    # -- empty timeout -------------------------------------------------------------------
    def _arm_empty_timer(self) -> None:
        self._cancel_empty_timer()
        if self.closed or self._on_empty is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._empty_handle = loop.call_later(self.empty_timeout_s, self._empty_fired)

    def _cancel_empty_timer(self) -> None:
        if self._empty_handle is not None:
            self._empty_handle.cancel()
            self._empty_handle = None

    def _empty_fired(self) -> None:
        self._empty_handle = None
        if not self.participants and not self.closed and self._on_empty is not None:
            log.info("room %s closed after %.1f s empty", self.name, self.empty_timeout_s)
            self.closed = True
            self._on_empty(self)


class RoomManager:
    """All rooms of one server, created on first join and dropped after their empty timeout."""

    def __init__(self, *, empty_timeout_s: float) -> None:
        self.empty_timeout_s = empty_timeout_s
        self.rooms: dict[str, Room] = {}

    def get(self, name: str) -> Room | None:
        return self.rooms.get(name)

    def get_or_create(self, name: str, *, empty_timeout_s: float | None = None,
                      max_participants: int = 0, metadata: str = "") -> Room:
        """Return the open room called ``name``, creating it if needed."""
        room = self.rooms.get(name)
        if room is None or room.closed:
            room = Room(name, empty_timeout_s=empty_timeout_s or self.empty_timeout_s,
                        max_participants=max_participants, metadata=metadata,
                        on_empty=self._drop)
            self.rooms[name] = room
            log.info("room %s created (%s)", name, room.sid)
        return room

    def delete(self, name: str, reason: m.DisconnectReason = m.DisconnectReason.ROOM_DELETED) -> bool:
        """Close a room and disconnect its participants."""
        room = self.rooms.pop(name, None)
        if room is None:
            return False
        room.close(reason)
        return True

    def _drop(self, room: Room) -> None:
        if self.rooms.get(room.name) is room:
            del self.rooms[room.name]

    def close_all(self) -> None:
        """Server shutdown: disconnect everyone with SERVER_SHUTDOWN."""
        for name in list(self.rooms):
            self.delete(name, m.DisconnectReason.SERVER_SHUTDOWN)
