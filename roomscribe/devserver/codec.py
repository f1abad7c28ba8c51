"""Signalling codec: join parameters from the URL, SignalRequest/Response framing, ids."""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from livekit.protocol import rtc as rtc_pb

PROTOCOL_VERSION = 16


class JoinParamsError(ValueError):
    """The join URL could not be understood."""


@dataclass
class JoinParams:
    """Everything a client says when it opens the signalling socket."""

    token: str | None
    single_pc: bool
    auto_subscribe: bool = True
    sdk: str = ""
    version: str = ""
    protocol: int = 0
    reconnect: bool = False
    publisher_offer: rtc_pb.SessionDescription | None = None
    client_info: dict[str, str] = field(default_factory=dict)


def new_id(prefix: str) -> str:
    """A LiveKit-style id: ``PA_``, ``TR_``, ``RM_`` plus 12 random characters."""
    return prefix + secrets.token_urlsafe(9).replace("-", "x").replace("_", "y")


def bearer_token(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """Token from ``Authorization: Bearer`` (Rust SDK) or ``access_token`` (JS SDK)."""
    auth = headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return query.get("access_token") or None


def _b64url_decode(text: str) -> bytes:
    text = text.strip().replace("+", "-").replace("/", "_").replace(" ", "-")
    text += "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(text)


def decode_join_request(param: str) -> rtc_pb.JoinRequest:
    """Decode the v1 ``join_request`` query value (base64url WrappedJoinRequest)."""
    try:
        wrapped = rtc_pb.WrappedJoinRequest.FromString(_b64url_decode(param))
        raw = wrapped.join_request
        if wrapped.compression == rtc_pb.WrappedJoinRequest.GZIP:
            raw = gzip.decompress(raw)
        return rtc_pb.JoinRequest.FromString(raw)
    except (binascii.Error, OSError, ValueError, Exception) as exc:  # protobuf raises DecodeError
        raise JoinParamsError(f"malformed join_request: {exc}") from exc


def _flag(value: str | None, default: bool) -> bool:
    if value is None:
        return default
    return value.lower() in ("1", "true", "yes")


def parse_join_params(query: Mapping[str, str], headers: Mapping[str, str], single_pc: bool) -> JoinParams:
    """Build :class:`JoinParams` from a ``/rtc`` (dual PC) or ``/rtc/v1`` (single PC) request."""
    token = bearer_token(headers, query)
    if not single_pc:
        return JoinParams(
            token=token,
            single_pc=False,
            auto_subscribe=_flag(query.get("auto_subscribe"), True),
            sdk=query.get("sdk", ""),
            version=query.get("version", ""),
            protocol=int(query.get("protocol", "0") or 0),
            reconnect=_flag(query.get("reconnect"), False),
            client_info={k: query[k] for k in ("os", "browser", "device_model") if k in query},
        )
    param = query.get("join_request")
    if not param:
        raise JoinParamsError("missing join_request parameter")
    req = decode_join_request(param)
    settings = req.connection_settings
    return JoinParams(
        token=token,
        single_pc=True,
        auto_subscribe=settings.auto_subscribe if req.HasField("connection_settings") else True,
        sdk=str(req.client_info.sdk),
        version=req.client_info.version,
        protocol=req.client_info.protocol,
        reconnect=req.reconnect,
        publisher_offer=req.publisher_offer if req.HasField("publisher_offer") else None,
    )


def encode_response(msg: rtc_pb.SignalResponse) -> bytes:
    """Serialize a server message for a binary WebSocket frame."""
    return msg.SerializeToString()


def decode_request(data: bytes | str) -> rtc_pb.SignalRequest:
    """Parse a client message; JSON frames are accepted for old clients."""
    if isinstance(data, str):
        from google.protobuf import json_format

        return json_format.Parse(data, rtc_pb.SignalRequest(), ignore_unknown_fields=True)
    return rtc_pb.SignalRequest.FromString(data)


def candidate_init_json(candidate: str, sdp_mid: str, sdp_mline_index: int) -> str:
    """The trickle JSON both SDKs parse; all three fields are always present."""
    return json.dumps({"candidate": candidate, "sdpMid": sdp_mid, "sdpMLineIndex": sdp_mline_index})


def parse_candidate_init(text: str) -> tuple[str, str | None, int | None]:
    """Return ``(candidate, sdpMid, sdpMLineIndex)`` from a client's trickle JSON."""
    data = json.loads(text)
    return str(data.get("candidate", "")), data.get("sdpMid"), data.get("sdpMLineIndex")
