"""One control socket: reads JSON requests and binary audio, writes events through a bounded queue.

A slow reader never slows a session: interims and echoed audio are dropped (and counted) when the
queue is full; if a non-droppable event does not fit, the socket is closed and the session waits
for a resume, which replays every final it missed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from typing import Any, Awaitable, Callable

from aiohttp import WSMsgType, web

from control.config import Settings
from control.protocol import (
    PROTOCOL_VERSION,
    AudioFormat,
    ClientMessage,
    ProtocolError,
    error_message,
    parse_client_message,
    parse_session_start,
    reply,
)
from control.session import Session, SessionManager, SessionOptions
from control.subscriptions import SUBSCRIBABLE, Subscription
from control.ws_audio import WsAudioInput
from tokens import ControlClaims

log = logging.getLogger(__name__)

CLOSE_SLOW_CONSUMER = 4009
ERRORS_PER_SECOND = 20


class ControlConnection:
    """Serves one authenticated control socket; it is the Outbox of the session it holds."""

    def __init__(self, ws: web.WebSocketResponse, claims: ControlClaims, manager: SessionManager, settings: Settings) -> None:
        self.ws = ws
        self.claims = claims
        self.manager = manager
        self.settings = settings
        self.session: Session | None = None
        self.audio_input: WsAudioInput | None = None
        self._queue: deque[tuple[str, Any]] = deque()
        self._queued = asyncio.Event()
        self._closing = False
        self.dropped = 0
        self._error_window = (0.0, 0)
        self._errors_suppressed = 0
        self._handlers: dict[str, Callable[[ClientMessage], Awaitable[None]]] = {
            "session.start": self._on_session_start,
            "session.stop": self._on_session_stop,
            "ping": self._on_ping,
            "token.refresh": self._on_token_refresh,
            "vad": self._on_vad,
            "subscribe": self._on_subscribe,
            "unsubscribe": self._on_unsubscribe,
        }

    # -- Outbox ------------------------------------------------------------------------------------
    def send_json(self, message: dict[str, Any], *, droppable: bool = False, force: bool = False) -> None:
        self._enqueue(("json", message), droppable, force)

    def send_bytes(self, data: bytes) -> None:
        self._enqueue(("bytes", data), True, False)

    def _enqueue(self, item: tuple[str, Any], droppable: bool, force: bool) -> None:
        """Queue a message; past the limit drop it if droppable, else close (unless forced: a replay)."""
        if self._closing:
            return
        if len(self._queue) >= self.settings.send_queue_limit and not force:
            if droppable:
                self.dropped += 1
                return
            log.warning("control socket of user %s reads too slowly; closing it (session kept for resume)", self.claims.user)
            self._closing = True
            asyncio.get_running_loop().create_task(
                self.ws.close(code=CLOSE_SLOW_CONSUMER, message=b"client reads too slowly; resume the session")
            )
            if self.session is not None:
                self.manager.detach(self.session, self)
            return
        self._queue.append(item)
        self._queued.set()

    def send_error(self, error: ProtocolError) -> None:
        """Send an `error`, at most ERRORS_PER_SECOND a second (the rest are counted, then reported)."""
        now = time.monotonic()
        window_start, count = self._error_window
        if now - window_start >= 1.0:
            window_start, count = now, 0
        if count >= ERRORS_PER_SECOND:
            self._errors_suppressed += 1
            self._error_window = (window_start, count)
            return
        self._error_window = (window_start, count + 1)
        extra: dict[str, Any] = {}
        if self._errors_suppressed:
            extra["suppressed"] = self._errors_suppressed
            self._errors_suppressed = 0
        self.send_json(error_message(error.code, error.message, error.request_id, **extra))

    async def _sender(self) -> None:
        while True:
            if not self._queue:
                self._queued.clear()
                await self._queued.wait()
                continue
            kind, payload = self._queue.popleft()
            if kind == "json":
                await self.ws.send_str(json.dumps(payload, separators=(",", ":")))
            else:
                await self.ws.send_bytes(payload)

    # -- reading ------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Serve the socket until it closes; the session then waits out its grace period."""
        sender = asyncio.get_running_loop().create_task(self._sender())
        self.send_json(
            {
                "type": "hello",
                "protocol": PROTOCOL_VERSION,
                "user": self.claims.user,
                "transports": self._allowed_transports(),
                "default_transport": self.settings.audio_transport,
            }
        )
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_text(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self._on_audio(msg.data)
                elif msg.type == WSMsgType.ERROR:
                    log.info("control socket of user %s failed: %s", self.claims.user, self.ws.exception())
                    break
        finally:
            self._closing = True
            self.manager.drop_subscriptions(self)
            if self.session is not None:
                self.manager.detach(self.session, self)
            # Let queued messages go out if the socket is still writable, then stop the sender.
            if not self.ws.closed:
                await asyncio.wait_for(self._drain(), timeout=2.0)
            sender.cancel()

    async def _drain(self) -> None:
        while self._queue and not self.ws.closed:
            await asyncio.sleep(0.01)

    async def _on_text(self, text: str) -> None:
        try:
            message = parse_client_message(text)
            await self._handlers[message.type](message)
        except ProtocolError as error:
            self.send_error(error)

    def _on_audio(self, data: bytes) -> None:
        session = self.session
        if session is None or session.ended:
            self.send_error(ProtocolError("audio.no_session", "audio arrived before session.start; it was not used"))
            return
        if session.outbox is not self:
            # The session was resumed on another socket: audio still arriving here is not used,
            # or it would be heard twice (the client resends what this socket did not confirm).
            self.send_error(ProtocolError("audio.session_moved", "this session continues on another socket; audio here was not used"))
            return
        if session.transport != "ws" or self.audio_input is None:
            self.send_error(
                ProtocolError("audio.wrong_transport", "this session receives audio over LiveKit, not the control socket")
            )
            return
        session.audio_bytes_received += len(data)
        if session.options.echo:
            self.send_bytes(data)
        samples, error = self.audio_input.accept(data)
        if error is not None:
            self.send_error(error)
        if samples is not None:
            fmt = self.audio_input.format
            session.pipeline().feed(samples, fmt.sample_rate, fmt.channels)

    # -- handlers ---------------------------------------------------------------------------------
    def _allowed_transports(self) -> list[str]:
        allowed = [self.settings.audio_transport]
        if self.manager.media is not None and "livekit" not in allowed:
            allowed.append("livekit")
        if self.settings.allow_ws_fallback and "ws" not in allowed:
            allowed.append("ws")
        return allowed

    def _live_session(self, message: ClientMessage) -> Session:
        if self.session is None or self.session.ended:
            self.session = None
            raise ProtocolError("session.none", "no session on this socket; send session.start first", message.id)
        return self.session

    async def _on_session_start(self, message: ClientMessage) -> None:
        if self.session is not None and not self.session.ended:
            raise ProtocolError("session.already_started", "this socket already has a session; send session.stop first", message.id)
        request = parse_session_start(message)
        if request.resume is not None:
            session, replay_from = self._resume(message, request.resume.session_id, request.resume.last_seq)
        else:
            session = await self._start(message, request)
            replay_from = None
        self.session = session
        if session.transport == "ws":
            self.audio_input = WsAudioInput(session.options.audio or AudioFormat(), self.settings.max_frame_s)
        ready = reply(
            "session.ready",
            message.id,
            session_id=session.id,
            transport=session.transport,
            protocol=PROTOCOL_VERSION,
            room=session.room,
            resumed=replay_from is not None,
            last_seq=session.seq,
        )
        if session.transport == "ws":
            ready["audio"] = (session.options.audio or AudioFormat()).as_dict()
            ready["audio_bytes_received"] = session.audio_bytes_received
        else:
            if replay_from is not None and self.manager.media is not None:
                # A resumed client gets fresh LiveKit credentials; old tokens are not replayed.
                session.media_info = {**(session.media_info or {}), **await self.manager.media.refresh_credentials(session)}
            ready["livekit"] = session.media_info
        self.send_json(ready)
        if replay_from is not None:
            session.replay(self, replay_from)
        elif session.media is not None:
            await session.media.ready()

    def _resume(self, message: ClientMessage, session_id: str, last_seq: int) -> tuple[Session, int]:
        try:
            return self.manager.resume(self.claims.user, session_id, last_seq, self), last_seq
        except ProtocolError as error:
            error.request_id = message.id
            raise

    async def _start(self, message: ClientMessage, request: Any) -> Session:
        transport = request.transport or self.settings.audio_transport
        if transport not in self._allowed_transports():
            raise ProtocolError(
                "transport.not_allowed",
                f"transport {transport!r} is not enabled on this server; allowed: {self._allowed_transports()}",
                message.id,
            )
        if transport != "ws" and request.audio is not None:
            raise ProtocolError("bad_request", "'audio' only applies to the ws transport", message.id)
        multi_user = request.room is not None
        if multi_user and not self.claims.allows("multi_user"):
            raise ProtocolError("not_allowed", "this control token may not transcribe a whole room (no 'multi_user' claim)", message.id)
        if multi_user and transport != "livekit":
            raise ProtocolError("bad_request", "a multi-user room session needs the livekit transport", message.id)
        options = SessionOptions(
            transport=transport,
            audio=(request.audio or AudioFormat()) if transport == "ws" else None,
            interim=request.interim,
            echo=request.echo,
            multi_user=multi_user,
        )
        try:
            return await self.manager.start(self.claims.user, options, self, room=request.room)
        except ProtocolError as error:
            error.request_id = message.id
            raise

    async def _on_session_stop(self, message: ClientMessage) -> None:
        session = self._live_session(message)
        await self.manager.stop(session, "stopped")
        self.session = None
        self.audio_input = None

    async def _on_ping(self, message: ClientMessage) -> None:
        self.send_json(reply("pong", message.id, time=time.time()))

    async def _on_token_refresh(self, message: ClientMessage) -> None:
        session = self._live_session(message)
        if session.transport != "livekit" or self.manager.media is None:
            raise ProtocolError("bad_request", "token.refresh only applies to LiveKit sessions", message.id)
        credentials = await self.manager.media.refresh_credentials(session)
        session.emit(reply("token", message.id, **credentials))

    async def _on_vad(self, message: ClientMessage) -> None:
        session = self._live_session(message)
        speaking = message.body.get("speaking")
        if not isinstance(speaking, bool):
            raise ProtocolError("bad_request", "'speaking' must be true or false", message.id)
        handler = getattr(session.media, "on_client_vad", None)
        if handler is not None:
            await handler(speaking)

    async def _on_subscribe(self, message: ClientMessage) -> None:
        session_id = message.body.get("session_id")
        user = message.body.get("user")
        if (session_id is None) == (user is None):
            raise ProtocolError("bad_request", "subscribe needs exactly one of 'session_id' or 'user'", message.id)
        if not isinstance(session_id or user, str) or not (session_id or user):
            raise ProtocolError("bad_request", "'session_id' / 'user' must be a non-empty string", message.id)
        events = message.body.get("events", sorted(SUBSCRIBABLE))
        if not isinstance(events, list) or not events or not set(events) <= SUBSCRIBABLE:
            raise ProtocolError(
                "bad_request", f"'events' must be a non-empty list drawn from {sorted(SUBSCRIBABLE)}", message.id
            )
        if session_id is not None:
            target = self.manager.sessions.get(session_id)
            owner = target.user if target is not None else None
        else:
            owner = user
        if owner != self.claims.user and not self.claims.allows("monitor"):
            # The same answer for "not yours" and "does not exist" reveals nothing about other users.
            raise ProtocolError(
                "not_allowed", "you may watch only your own sessions unless your token has the 'monitor' claim", message.id
            )
        subscription = Subscription(outbox=self, events=frozenset(events), session_id=session_id, user=user)
        try:
            self.manager.subscribe(subscription)
        except ProtocolError as error:
            error.request_id = message.id
            raise
        self.send_json(reply("subscribed", message.id, **subscription.describe()))

    async def _on_unsubscribe(self, message: ClientMessage) -> None:
        subscription_id = message.body.get("subscription_id")
        if not isinstance(subscription_id, str) or not self.manager.unsubscribe(subscription_id, self):
            raise ProtocolError("subscription.not_found", "no subscription with that id on this socket", message.id)
        self.send_json(reply("unsubscribed", message.id, subscription_id=subscription_id))
