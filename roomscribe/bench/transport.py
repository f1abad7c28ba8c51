"""How the bench gets a session's audio to the server: the transport switch and what a run records.

A transport streams a `SessionPlan` like a microphone — frame k (of `frame_ms`) is sent once it
would have been fully spoken, at t0 + (k + 1)·frame_ms / speed — and records every server event
with its arrival time on the same monotonic clock, so that latency = arrival − (t0 + true time).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import aiohttp
import msgspec

from control.schema import Request, decode_server_message, encode
from roomscribe.bench.plan import SessionPlan


@dataclass(frozen=True)
class Endpoint:
    """Where the control socket is and how to get a token for it."""

    url: str
    token_for: Callable[[str], str]  # user id → control token


@dataclass
class SessionRecord:
    """What one streamed session produced."""

    plan: SessionPlan
    user: str
    transport: str
    speed: float
    frame_s: float = 0.02  # length of one sent frame
    max_shift_s: float = 0.0  # how far the server's session clock may run ahead of the bench's
    t0: float = 0.0  # monotonic time at which session audio time 0 was "spoken"
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)  # (arrival, event)
    send_lateness_s: list[float] = field(default_factory=list)  # per frame: actual − scheduled send
    completed: bool = False  # session.ended arrived after session.stop
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def of_type(self, kind: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, e) for t, e in self.events if e.get("type") == kind]


class Transport(Protocol):
    """Streams one session plan and records the events."""

    name: str

    async def run_session(
        self, plan: SessionPlan, user: str, *, start_delay_s: float = 0.0, interim: bool = True, speed: float = 1.0
    ) -> SessionRecord: ...


class TransportUnavailable(RuntimeError):
    """This transport cannot run here (not built, not enabled on the server, SDK missing)."""


TRANSPORTS = ("ws", "livekit")
F = TypeVar("F")  # a frame as a transport sends it (bytes, or int16 samples)


def make_transport(name: str, endpoint: Endpoint) -> Transport:
    """The transport called `name` ("ws" or "livekit")."""
    if name == "ws":
        from roomscribe.bench.ws_transport import WsTransport

        return WsTransport(endpoint)
    if name == "livekit":
        from roomscribe.bench.livekit_transport import LiveKitTransport

        return LiveKitTransport(endpoint)
    raise ValueError(f"unknown transport {name!r}; choose from {', '.join(TRANSPORTS)}")


async def pace_frames(
    record: SessionRecord, frames: Sequence[F], frame_s: float, send: Callable[[F], Awaitable[None]]
) -> None:
    """Send `frames` like a live microphone from `record.t0`, noting how late each send was."""
    speed = record.speed if record.speed > 0 else 1e9
    record.frame_s = frame_s
    for k, frame in enumerate(frames):
        due = record.t0 + (k + 1) * frame_s / speed
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        record.send_lateness_s.append(max(0.0, time.monotonic() - due))
        await send(frame)


async def send_request(ws: Any, request: Request) -> None:
    """Send one request of the wire schema (control/schema.py) as a text frame."""
    await ws.send_str(encode(request).decode())


async def read_control_events(
    ws: Any,
    record: SessionRecord,
    ready: asyncio.Future[dict],
    ended: asyncio.Future[dict],
    *,
    unavailable: type[Exception] = RuntimeError,
    on_event: Callable[[dict], None] | None = None,
) -> None:
    """Record every event of a bench session's control socket (with its arrival time) and settle
    `ready` (session.ready, or `unavailable` on the start's error) and `ended` (session.ended)."""
    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            continue
        event = json.loads(msg.data)
        record.events.append((time.monotonic(), event))
        try:
            decode_server_message(event)
        except msgspec.ValidationError as error:  # reported with the run, never silently used
            record.notes.append(f"a server message outside the wire schema: {error}")
        kind = event.get("type")
        if kind == "session.ready" and not ready.done():
            ready.set_result(event)
        elif kind == "error" and event.get("id") == "start" and not ready.done():
            ready.set_exception(unavailable(f"{event.get('code')}: {event.get('message')}"))
        elif kind == "session.ended" and not ended.done():
            ended.set_result(event)
        if on_event is not None:
            on_event(event)
    for fut in (ready, ended):
        if not fut.done():
            fut.set_exception(RuntimeError(f"control socket closed (code {ws.close_code}, {ws.exception()!r})"))
