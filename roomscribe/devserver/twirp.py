"""The subset of LiveKit's Twirp RoomService the project uses, for ``livekit-api`` clients."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from livekit.protocol import models as m
from livekit.protocol import room as rm

from .auth import Authenticator, AuthError
from .codec import bearer_token
from .room import RoomManager

log = logging.getLogger("roomscribe.devserver.twirp")

PREFIX = "/twirp/livekit.RoomService/"


class TwirpError(Exception):
    """A Twirp error: code, message and HTTP status."""

    def __init__(self, status: int, code: str, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


class RoomService:
    """Pure handlers: ``(token, request message) -> response message``."""

    def __init__(self, rooms: RoomManager, auth: Authenticator) -> None:
        self.rooms = rooms
        self.auth = auth
        # Each handler takes the request type it is listed with (Any: a Callable cannot say "the type before").
        self.methods: dict[str, tuple[type[Message], Callable[[str | None, Any], Message]]] = {
            "CreateRoom": (rm.CreateRoomRequest, self.create_room),
            "ListRooms": (rm.ListRoomsRequest, self.list_rooms),
            "DeleteRoom": (rm.DeleteRoomRequest, self.delete_room),
            "ListParticipants": (rm.ListParticipantsRequest, self.list_participants),
            "GetParticipant": (rm.RoomParticipantIdentity, self.get_participant),
            "RemoveParticipant": (rm.RoomParticipantIdentity, self.remove_participant),
            "UpdateSubscriptions": (rm.UpdateSubscriptionsRequest, self.update_subscriptions),
            "SendData": (rm.SendDataRequest, self.send_data),
        }

    def _room(self, name: str):
        room = self.rooms.get(name)
        if room is None or room.closed:
            raise TwirpError(404, "not_found", f"room {name!r} does not exist")
        return room

    def create_room(self, token: str | None, req: rm.CreateRoomRequest) -> m.Room:
        self.auth.verify_admin(token, create=True)
        if not req.name:
            raise TwirpError(400, "invalid_argument", "room name is required")
        room = self.rooms.get_or_create(req.name, empty_timeout_s=float(req.empty_timeout) or None,
                                        max_participants=req.max_participants, metadata=req.metadata)
        return room.info()

    def list_rooms(self, token: str | None, req: rm.ListRoomsRequest) -> rm.ListRoomsResponse:
        self.auth.verify_admin(token, list_=True)
        names = set(req.names)
        rooms = [room.info() for room in self.rooms.rooms.values()
                 if not room.closed and (not names or room.name in names)]
        return rm.ListRoomsResponse(rooms=rooms)

    def delete_room(self, token: str | None, req: rm.DeleteRoomRequest) -> rm.DeleteRoomResponse:
        self.auth.verify_admin(token, create=True)
        self.rooms.delete(req.room)
        return rm.DeleteRoomResponse()

    def list_participants(self, token: str | None, req: rm.ListParticipantsRequest) -> rm.ListParticipantsResponse:
        self.auth.verify_admin(token, room=req.room)
        room = self._room(req.room)
        return rm.ListParticipantsResponse(participants=[p.info() for p in room.participants.values()])

    def get_participant(self, token: str | None, req: rm.RoomParticipantIdentity) -> m.ParticipantInfo:
        self.auth.verify_admin(token, room=req.room)
        part = self._room(req.room).participants.get(req.identity)
        if part is None:
            raise TwirpError(404, "not_found", f"participant {req.identity!r} is not in room {req.room!r}")
        return part.info()

    def remove_participant(self, token: str | None, req: rm.RoomParticipantIdentity) -> rm.RemoveParticipantResponse:
        self.auth.verify_admin(token, room=req.room)
        room = self._room(req.room)
        part = room.participants.get(req.identity)
        if part is None:
            raise TwirpError(404, "not_found", f"participant {req.identity!r} is not in room {req.room!r}")
        room.remove(part, reason=m.DisconnectReason.PARTICIPANT_REMOVED)
        return rm.RemoveParticipantResponse()

    def update_subscriptions(self, token: str | None, req: rm.UpdateSubscriptionsRequest) -> rm.UpdateSubscriptionsResponse:
        self.auth.verify_admin(token, room=req.room)
        room = self._room(req.room)
        part = room.participants.get(req.identity)
        if part is None:
            raise TwirpError(404, "not_found", f"participant {req.identity!r} is not in room {req.room!r}")
        sids = list(req.track_sids)
        for pt in req.participant_tracks:
            sids.extend(pt.track_sids)
        room.update_subscription(part, sids, req.subscribe)
        return rm.UpdateSubscriptionsResponse()

    def send_data(self, token: str | None, req: rm.SendDataRequest) -> rm.SendDataResponse:
        self.auth.verify_admin(token, room=req.room)
        room = self._room(req.room)
        packet = m.DataPacket(kind=req.kind, destination_identities=list(req.destination_identities),
                              user=m.UserPacket(payload=req.data, topic=req.topic,
                                                destination_identities=list(req.destination_identities)))
        payload = packet.SerializeToString()
        dests = set(req.destination_identities)
        for part in room.participants.values():
            if not dests or part.identity in dests:
                part.link.send_data(payload, req.kind == m.DataPacket.RELIABLE)
        return rm.SendDataResponse()


def _error(status: int, code: str, msg: str) -> web.Response:
    return web.Response(status=status, content_type="application/json",
                        text=json.dumps({"code": code, "msg": msg}))


def make_handler(service: RoomService) -> Callable[[web.Request], Awaitable[web.Response]]:
    """aiohttp handler for ``POST /twirp/livekit.RoomService/{method}`` (protobuf or JSON)."""

    async def handle(request: web.Request) -> web.Response:
        method = request.match_info["method"]
        entry = service.methods.get(method)
        if entry is None:
            return _error(404, "bad_route", f"RoomService/{method} is not implemented by the dev server")
        req_type, fn = entry
        body = await request.read()
        is_json = request.content_type == "application/json"
        try:
            req = json_format.Parse(body or b"{}", req_type(), ignore_unknown_fields=True) if is_json \
                else req_type.FromString(body)
        except (DecodeError, json_format.ParseError) as exc:
            return _error(400, "malformed", f"cannot parse request: {exc}")
        try:
            resp = fn(bearer_token(request.headers, {}), req)
        except AuthError as exc:
            return _error(401 if exc.status == 401 else 403,
                          "unauthenticated" if exc.status == 401 else "permission_denied", exc.reason)
        except TwirpError as exc:
            return _error(exc.status, exc.code, exc.msg)
        if is_json:
            return web.Response(content_type="application/json",
                                text=json_format.MessageToJson(resp, preserving_proto_field_name=True))
        return web.Response(body=resp.SerializeToString(), content_type="application/protobuf")

    return handle
