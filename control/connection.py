"""One control socket: reads JSON requests and binary audio, writes events through a bounded queue.

A slow reader never slows a session: interims and echoed audio are dropped (and counted) when the
queue is full; if a non-droppable event does not fit, the socket is closed and the session waits
for a resume, which replays every final it missed. Every malformed request gets a coded `error` and
the socket goes on. The control token is watched while the socket lives (control/auth_expiry.py):
`auth.expiring`, `auth.refresh` with a fresh token, or `auth.expired` and a close (4001).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

from aiohttp import WSMsgType, web

from control.admission import Limits
from control.auth_expiry import TokenExpiry
from control.commands import CommandError, CommandSet
from control.config import Settings
from control.prompt_check import check_session_prompt
from control.rooms import check_multi_user_room
from control.schema import (
    CLOSE_SLOW_CONSUMER,
    CLOSE_START_TIMEOUT,
    CLOSE_TOKEN_EXPIRED,
    PROTOCOL_VERSION,
    AuthExpired,
    AuthExpiring,
    AuthRefresh,
    AuthRefreshed,
    Hello,
    InterimTranscript,
    Ping,
    Pong,
    ProtocolError,
    Request,
    ServerMessage,
    SessionReady,
    SessionStart,
    SessionStop,
    Subscribe,
    Token,
    TokenRefresh,
    Transport,
    Unsubscribe,
    Unsubscribed,
    Vad,
    decode_request,
    encode,
)
from control.session import Session, SessionManager, SessionOptions
from control.subscriptions import Subscription
from roomscribe.common.languages import language_refusal
from roomscribe.common.logs import log_context
from tokens import AuthError, ControlClaims, verify_control_token

log = logging.getLogger(__name__)

ERRORS_PER_SECOND = 20


class ControlConnection:
    """Serves one authenticated control socket; it is the Outbox of the session it holds."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        claims: ControlClaims,
        manager: SessionManager,
        settings: Settings,
        limits: Limits | None = None,
    ) -> None:
        self.ws = ws
        self.claims = claims
        self.manager = manager
        self.settings = settings
        self.limits = limits or Limits.from_settings(settings)
        #: Set once the socket started a session or a subscription (the start timeout no longer applies).
        self._started = False
        self._starting = False
        self._start_overdue = False
        self._close_task: asyncio.Task[None] | None = None
        self.session: Session | None = None
        self._queue: deque[ServerMessage | bytes] = deque()
        self._queued = asyncio.Event()
        self._closing = False
        self.dropped = 0
        #: For the statistics logged when the socket closes.
        self.opened_at = time.monotonic()
        self.sent = 0
        self.errors = 0
        self._error_window = (0.0, 0)
        self._errors_suppressed = 0
        self._expiry = TokenExpiry(
            warn_s=settings.auth_expiring_s, leeway_s=settings.control_token_leeway_s, grace_s=settings.auth_expired_grace_s
        )
        self._token_accepted_at = time.time()
        self._token_expired = False
        self._warned_exp: int | None = None
        self._token_watch: asyncio.Task[None] | None = None
        #: Set while no request is being handled (requests are read one at a time).
        self._idle = asyncio.Event()
        self._idle.set()

    # -- Outbox ------------------------------------------------------------------------------------
    def send_message(self, message: ServerMessage, *, droppable: bool = False, force: bool = False) -> None:
        self._enqueue(message, droppable, force)

    def send_bytes(self, data: bytes) -> None:
        self._enqueue(data, True, False)

    def _enqueue(self, item: ServerMessage | bytes, droppable: bool, force: bool) -> None:
        """Queue a message; past the limit drop it if droppable, else close (unless forced: a replay)."""
        if self._closing:
            return
        if len(self._queue) >= self.settings.send_queue_limit and not force:
            if droppable:
                self.dropped += 1
                if isinstance(item, InterimTranscript):
                    self.manager.metrics.interims_dropped.labels("slow_reader").inc()
                return
            log.warning("control socket of user %r reads too slowly; closing it (session kept for resume)", self.claims.user)
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
        self.errors += 1
        self.manager.metrics.errors.labels(error.code).inc()
        now = time.monotonic()
        window_start, count = self._error_window
        if now - window_start >= 1.0:
            window_start, count = now, 0
        if count >= ERRORS_PER_SECOND:
            self._errors_suppressed += 1
            self._error_window = (window_start, count)
            return
        self._error_window = (window_start, count + 1)
        suppressed, self._errors_suppressed = self._errors_suppressed or None, 0
        self.send_message(error.to_message(suppressed=suppressed))

    async def _sender(self) -> None:
        while True:
            if not self._queue:
                self._queued.clear()
                await self._queued.wait()
                continue
            item = self._queue.popleft()
            self.sent += 1
            if isinstance(item, bytes):
                await self.ws.send_bytes(item)
            else:
                await self.ws.send_str(encode(item).decode())

    # -- reading ------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Serve the socket until it closes; the session then waits out its grace period."""
        loop = asyncio.get_running_loop()
        sender = loop.create_task(self._sender())
        timeout = self.limits.start_timeout_s
        deadline = loop.call_later(timeout, self._start_timed_out) if timeout > 0 else None
        self.send_message(
            Hello(
                protocol=PROTOCOL_VERSION,
                user=self.claims.user,
                transports=self._allowed_transports(),
                default_transport=self._transport(self.settings.audio_transport),
            )
        )
        self._watch_token()
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_text(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await self._on_audio(msg.data)
                elif msg.type == WSMsgType.ERROR:
                    log.info("control socket of user %r failed: %r", self.claims.user, self.ws.exception())
                    break
        finally:
            if deadline is not None:
                deadline.cancel()
            self._closing = True
            if self._token_watch is not None:
                self._token_watch.cancel()
            self.manager.drop_subscriptions(self)
            if self.session is not None:
                self.manager.detach(self.session, self)
            # Let queued messages go out if the socket is still writable, then stop the sender.
            if not self.ws.closed:
                await asyncio.wait_for(self._drain(), timeout=2.0)
            sender.cancel()

    def _start_timed_out(self) -> None:
        self._start_overdue = True
        self._close_if_idle()

    def _close_if_idle(self) -> None:
        """Past the start timeout with neither a session nor a subscription (and no session.start
        under way): say so, then close the socket."""
        if not self._start_overdue or self._started or self._starting or self._closing:
            return
        error = self.limits.start_timeout_error()
        log.info("control socket of user %r closed: %s", self.claims.user, error.code)
        self.send_message(error.to_message(), force=True)
        self._closing = True
        self._close_task = asyncio.get_running_loop().create_task(self._close_after_drain(CLOSE_START_TIMEOUT, error.code))

    async def _close_after_drain(self, code: int, reason: str) -> None:
        """Let what is queued go out (at most 2 s), then close the socket with `code`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drain(), timeout=2.0)
        await self.ws.close(code=code, message=reason.encode())

    async def _drain(self) -> None:
        while self._queue and not self.ws.closed:  # noqa: ASYNC110  # only at close, bounded by the caller's 2 s
            await asyncio.sleep(0.01)

    async def _on_text(self, text: str) -> None:
        try:
            request = decode_request(text)
        except ProtocolError as error:
            self.send_error(error)
            return
        self._idle.clear()
        try:
            if self._token_expired and not isinstance(request, (AuthRefresh, Ping)):
                raise ProtocolError("auth.expired", "the control token has expired: send auth.refresh with a fresh one")
            await self._dispatch(request)
        except ProtocolError as error:
            if error.request_id is None:  # raised by the session manager or the media: it answers this request
                error.request_id = request.id
            self.send_error(error)
        except Exception:  # a bug must not cost the client its socket (or the session)
            log.exception("control socket of user %r: handling %s failed", self.claims.user, request.type)
            self.send_error(ProtocolError("internal_error", f"the server failed to handle {request.type}", request.id))
        finally:
            self._idle.set()

    async def _dispatch(self, request: Request) -> None:
        match request:
            case SessionStart():
                await self._on_session_start(request)
            case SessionStop():
                await self._on_session_stop(request)
            case Ping():
                self.send_message(Pong(id=request.id, time=time.time()))
            case TokenRefresh():
                await self._on_token_refresh(request)
            case Vad():
                await self._on_vad(request)
            case Subscribe():
                await self._on_subscribe(request)
            case Unsubscribe():
                self._on_unsubscribe(request)
            case AuthRefresh():
                self._on_auth_refresh(request)
            case _:  # pragma: no cover - every request type the schema decodes is handled above
                raise TypeError(f"no handler for {request.type}")

    async def _on_audio(self, data: bytes) -> None:
        session = self.session
        if self._audio_refused(session):
            return
        assert session is not None
        # Backpressure: while the session's audio meter holds this frame, the socket is not read.
        await session.media.pace(len(data))
        if self._audio_refused(session):
            return
        session.media.accept_audio(data, self)

    def _audio_refused(self, session: Session | None) -> bool:
        """Refuse a binary frame (with its error) when it cannot go to `session`."""
        if session is None or session.ended:
            self.send_error(ProtocolError("audio.no_session", "audio arrived before session.start; it was not used"))
            return True
        if session.outbox is not self:
            # The session was resumed on another socket: audio still arriving here is not used,
            # or it would be heard twice (the client resends what this socket did not confirm).
            moved = "this session continues on another socket; audio here was not used"
            self.send_error(ProtocolError("audio.session_moved", moved))
            return True
        return False

    # -- handlers ---------------------------------------------------------------------------------
    @staticmethod
    def _transport(name: str) -> Transport:
        """A configured transport name as the schema's type (Settings allows only these two)."""
        return "livekit" if name == "livekit" else "ws"

    def _allowed_transports(self) -> list[Transport]:
        allowed = [self._transport(self.settings.audio_transport)]
        if "livekit" in self.manager.transports and "livekit" not in allowed:
            allowed.append("livekit")
        if self.settings.allow_ws_fallback and "ws" not in allowed:
            allowed.append("ws")
        return allowed

    def _live_session(self, message: Request) -> Session:
        """The session this socket holds; refused when it has none or the session moved to another socket."""
        if self.session is None or self.session.ended:
            self.session = None
            raise ProtocolError("session.none", "no session on this socket; send session.start first", message.id)
        if self.session.outbox is not self:
            raise ProtocolError(
                "session.moved",
                f"session {self.session.id} was resumed on another socket and continues there; "
                f"{message.type} was not used",
                message.id,
            )
        return self.session

    async def _on_session_start(self, message: SessionStart) -> None:
        self._starting = True  # the start timeout does not cut a start in progress short
        try:
            await self._start_session(message)
        finally:
            self._starting = False
            self._close_if_idle()

    async def _start_session(self, message: SessionStart) -> None:
        if self.session is not None and not self.session.ended and self.session.outbox is self:
            raise ProtocolError(
                "session.already_started", "this socket already has a session; send session.stop first", message.id
            )
        if message.resume is not None:
            replay_from: int | None = message.resume.last_seq
            await self.manager.fetch(message.resume.session_id, self.claims.user)
            session = self.manager.resume(self.claims.user, message.resume.session_id, message.resume.last_seq, self)
            media = await session.media.resume()
        else:
            replay_from = None
            session = await self._start(message)
            log_context(session=session.id)
            media = await self.manager.open_media(session)
        self.session = session
        log_context(session=session.id)
        self._started = True
        ready = SessionReady(
            id=message.id,
            session_id=session.id,
            transport=self._transport(session.transport),
            protocol=PROTOCOL_VERSION,
            room=session.room,
            resumed=replay_from is not None,
            last_seq=session.seq,
            audio=media.audio,
            audio_bytes_received=media.audio_bytes_received,
            livekit=media.livekit,
        )
        self.send_message(ready)
        session.ready_sent()
        if replay_from is not None:
            session.replay(self, replay_from)
        else:
            await session.media.ready()

    async def _start(self, request: SessionStart) -> Session:
        transport = request.transport or self.settings.audio_transport
        if transport not in self._allowed_transports():
            raise ProtocolError(
                "transport.not_allowed",
                f"transport {transport!r} is not enabled on this server; allowed: {self._allowed_transports()}",
                request.id,
            )
        media_transport = self.manager.transport(transport)
        if request.audio is not None and not media_transport.takes_audio_format:
            raise ProtocolError("bad_request", "'audio' only applies to the ws transport", request.id)
        multi_user = request.room is not None
        if multi_user and not self.claims.allows("multi_user"):
            raise ProtocolError(
                "not_allowed", "this control token may not transcribe a whole room (no 'multi_user' claim)", request.id
            )
        if multi_user and not media_transport.multi_user:
            raise ProtocolError("bad_request", "a multi-user room session needs the livekit transport", request.id)
        if request.room is not None:
            check_multi_user_room(request.room, self.manager.room_prefix, self.claims.rooms, request.id)
        if self.manager.languages is not None:  # serve; in a cluster the worker's model decides
            language = request.language or self.settings.asr.language
            refused = language_refusal(language, request.task, self.manager.languages)
            if refused is not None:
                raise ProtocolError("language.unsupported", refused, request.id)
        check_session_prompt(request, self.settings.asr.model_path or self.settings.asr.model)
        try:
            commands = self.settings.commands if request.commands is None else CommandSet.from_specs(request.commands)
        except CommandError as error:
            raise ProtocolError("commands.invalid", f"session.start: {error}", request.id) from None
        options = SessionOptions(
            transport=transport,
            audio=request.audio,
            interim=request.interim,
            echo=request.echo,
            multi_user=multi_user,
            record=self._record(request),
            commands=commands,
        )
        options.keyterms, options.prompt, options.words = request.keyterms, request.prompt, request.words
        options.language, options.task = request.language, request.task
        refusal = self.limits.session_refusal(
            len(self.manager.sessions), replacing=self.manager.for_user(self.claims.user) is not None
        )
        if refusal is not None:
            raise refusal
        return await self.manager.start(self.claims.user, options, self, room=request.room)

    def _record(self, request: SessionStart) -> bool:
        """Whether to record the session: every session (ROOMSCRIBE_RECORD), or on request with the
        token's `record` claim."""
        if request.record and not self.settings.record and not self.claims.allows("record"):
            raise ProtocolError("not_allowed", "this control token may not ask for a recording (no 'record' claim)", request.id)
        record = request.record or self.settings.record
        if record and self.manager.recordings is None:
            raise ProtocolError(
                "recording.unavailable", "this server does not record sessions (cluster mode); start without 'record'",
                request.id,
            )
        return record

    def stats(self) -> dict[str, float | int]:
        """The socket's statistics (logged when it closes)."""
        return {
            "duration_s": round(time.monotonic() - self.opened_at, 3),
            "messages_sent": self.sent,
            "dropped": self.dropped,
            "errors": self.errors,
        }

    async def _on_session_stop(self, message: SessionStop) -> None:
        session = self._live_session(message)
        await self.manager.stop(session, "stopped")
        self.session = None

    async def _on_token_refresh(self, message: TokenRefresh) -> None:
        session = self._live_session(message)
        fresh = await session.media.refresh_credentials()
        session.emit(lambda seq: Token(seq=seq, id=message.id, token=fresh.token, expires_at=fresh.expires_at))

    async def _on_vad(self, message: Vad) -> None:
        await self._live_session(message).media.on_client_vad(message.speaking)

    async def _on_subscribe(self, message: Subscribe) -> None:
        session_id, user, events = message.session_id, message.user, message.events
        owner = await self.manager.owner_of(session_id) if session_id is not None else user
        if owner != self.claims.user and not self.claims.allows("monitor"):
            # The same answer for "not yours" and "does not exist" reveals nothing about other users.
            raise ProtocolError(
                "not_allowed", "you may watch only your own sessions unless your token has the 'monitor' claim", message.id
            )
        refusal = self.limits.subscription_refusal(len(self.manager.subscriptions_of(self)))
        if refusal is not None:
            raise refusal
        subscription = Subscription(outbox=self, events=frozenset(events), session_id=session_id, user=user)
        await self.manager.subscribe(subscription)
        self._started = True
        self.send_message(subscription.reply(message.id))

    def _on_unsubscribe(self, message: Unsubscribe) -> None:
        if not self.manager.unsubscribe(message.subscription_id, self):
            raise ProtocolError("subscription.not_found", "no subscription with that id on this socket", message.id)
        self.send_message(Unsubscribed(id=message.id, subscription_id=message.subscription_id))

    # -- control token expiry ---------------------------------------------------------------------
    def _on_auth_refresh(self, message: AuthRefresh) -> None:
        """Adopt a fresh control token of the same user (checked like the one the socket connected with)."""
        try:
            claims = verify_control_token(
                self.settings.control_secret, message.token, leeway_s=self.settings.control_token_leeway_s
            )
        except AuthError as error:
            raise ProtocolError(
                "auth.invalid_token", f"{error.message} ({error.code}); the socket keeps its current token", message.id
            ) from None
        if claims.user != self.claims.user:
            raise ProtocolError(
                "auth.wrong_user", "that control token is another user's; the socket keeps its current token", message.id
            )
        self.claims = claims
        self._token_accepted_at = time.time()
        self._token_expired = False
        self._watch_token()
        self.send_message(AuthRefreshed(id=message.id, expires_at=claims.expires_at))

    def _watch_token(self) -> None:
        """(Re)start the watch over the current token's expiry."""
        if self._token_watch is not None:
            self._token_watch.cancel()
        self._token_watch = asyncio.get_running_loop().create_task(self._token_watcher())

    async def _token_watcher(self) -> None:
        """auth.expiring, then auth.expired, then the close (4001), unless auth.refresh restarts it first."""
        expiry, expires_at = self._expiry, self.claims.expires_at
        await _sleep_until(expiry.warn_at(expires_at, self._token_accepted_at))
        if self._warned_exp != expires_at:  # once per token expiry, even if the same token is sent again
            self._warned_exp = expires_at
            self.send_message(AuthExpiring(expires_at=expires_at))
        await _sleep_until(expiry.expired_at(expires_at))
        self._token_expired = True
        self.send_message(AuthExpired(expires_at=expires_at, close_in_s=expiry.grace_s))
        await _sleep_until(expiry.close_at(expires_at))
        while not self._idle.is_set():
            # A slow request (session.start/stop) is being handled: an auth.refresh may wait behind it.
            await self._idle.wait()
            await asyncio.sleep(expiry.grace_s)
        if self._closing:
            return
        log.info("control socket of user %r: control token expired and was not refreshed; closing it", self.claims.user)
        self._closing = True
        await self.ws.close(code=CLOSE_TOKEN_EXPIRED, message=b"control token expired; reconnect with a fresh one")


async def _sleep_until(wall_time: float) -> None:
    """Sleep until the wall clock (Unix seconds) reaches `wall_time`."""
    delay = wall_time - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
