"""How the bench gets a session's audio to the server: the transport switch and what a run records.

A transport streams a `SessionPlan` like a microphone — frame k (of `frame_ms`) is sent once it
would have been fully spoken, at t0 + (k + 1)·frame_ms / speed — and records every server event
with its arrival time on the same monotonic clock, so that latency = arrival − (t0 + true time).

The control socket is the client library's `Link` (roomscribe.client.link: connect, `hello`, one
send lock), and every message goes through the wire schema: requests are control/schema.py structs,
each received message is decoded into its struct (`roomscribe.client.events.parse_event`) as it
arrives and recorded as such. The bench does not use `ControlClient` itself: its audio buffer and
writer task would stand between the pacing and the socket (the bench measures from the moment a
frame is written), its heartbeat would add pings, and its reconnect and resume would hide a dropped
socket that the bench must report as a failed session.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import aiohttp

from control.schema import Error, ServerMessage, ServerMessageT, SessionEnded, SessionReady
from roomscribe.bench.plan import SessionPlan
from roomscribe.client.events import Unknown, parse_event
from roomscribe.client.link import Link


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
    events: list[tuple[float, ServerMessage]] = field(default_factory=list)  # (arrival, event)
    send_lateness_s: list[float] = field(default_factory=list)  # per frame: actual − scheduled send
    completed: bool = False  # session.ended arrived after session.stop
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def of_type(self, kind: type[ServerMessageT]) -> list[tuple[float, ServerMessageT]]:
        """(arrival, event) of every event of one message class."""
        return [(t, e) for t, e in self.events if isinstance(e, kind)]


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


@contextlib.asynccontextmanager
async def control_link(
    endpoint: Endpoint, user: str, *, http: aiohttp.ClientSession | None = None, timeout_s: float = 30.0
) -> AsyncIterator[Link]:
    """A control socket of `user`, open once its `hello` has arrived; closed on exit."""
    async with contextlib.AsyncExitStack() as stack:
        if http is None:
            http = await stack.enter_async_context(aiohttp.ClientSession())
        link = await Link.open(http, endpoint.url, endpoint.token_for(user), timeout_s)
        stack.push_async_callback(link.close)
        yield link


def audio_sender(link: Link) -> Callable[[bytes], Awaitable[None]]:
    """Writes one binary audio frame on `link` (under its send lock, which is free: nothing else sends)."""

    async def send(frame: bytes) -> None:
        await link.send(lambda: frame)

    return send


async def read_control_events(
    link: Link,
    record: SessionRecord,
    ready: asyncio.Future[SessionReady],
    ended: asyncio.Future[SessionEnded],
    *,
    start_id: str = "start",
    unavailable: type[Exception] = RuntimeError,
    on_event: Callable[[ServerMessage], None] | None = None,
) -> None:
    """Record every event of a bench session's control socket (with its arrival time) and settle
    `ready` (session.ready, or `unavailable` on the error answering request `start_id`) and `ended`
    (session.ended). A message outside the wire schema is recorded as `Unknown`, with a note."""
    async for raw in link.messages():
        arrived = time.monotonic()
        event = parse_event(raw)
        record.events.append((arrived, event))
        if isinstance(event, Unknown):  # reported with the run, never silently used
            record.notes.append(f"a server message outside the wire schema: {event.error or str(raw)[:200]}")
        elif isinstance(event, SessionReady) and not ready.done():
            ready.set_result(event)
        elif isinstance(event, Error) and event.id == start_id and not ready.done():
            ready.set_exception(unavailable(f"{event.code}: {event.message}"))
        elif isinstance(event, SessionEnded) and not ended.done():
            ended.set_result(event)
        if on_event is not None:
            on_event(event)
    for fut in (ready, ended):
        if not fut.done():
            fut.set_exception(RuntimeError(f"control socket closed (code {link.ws.close_code}, {link.ws.exception()!r})"))
