"""`ControlClient`: an asyncio client for the control protocol that survives dropped links.

It is the I/O shell around `ClientCore` (client/core.py), which holds the session state, the
resume position, dedup, request matching and subscriptions without touching a socket.
One supervisor task owns the socket: it connects (exponential backoff with jitter between
attempts), then per link runs a reader, a heartbeat and an audio writer. When the link drops,
unconfirmed audio is rewound into the buffer, and on the next link the session is resumed
(`session.start {resume}`), its missed events replayed by the server, duplicates dropped by `seq`,
monitor subscriptions renewed, and the buffered audio sent in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from functools import partial
from typing import Any, cast
from urllib.parse import urlsplit

import aiohttp
import msgspec

from control.schema import (
    CLOSE_START_TIMEOUT,
    AudioFormat,
    Channels,
    Ping,
    ProtocolError,
    Request,
    SampleRate,
    SessionStart,
    SessionStop,
    TokenRefresh,
    Transport,
    Vad,
    decode_request,
)
from roomscribe.client.audio_sender import AudioSender
from roomscribe.client.core import LIVE, ClientCore, Subscription
from roomscribe.client.errors import AuthRejected, ClientError, ConnectionLost, GaveUp, ServerError
from roomscribe.client.events import Event, NoticeCode, SessionEnded, SessionReady, notice, parse_event
from roomscribe.client.hub import Callback, EventHub
from roomscribe.client.link import Link
from roomscribe.client.options import ClientOptions, ClientStats, ConnectionState, SessionState

log = logging.getLogger(__name__)

TokenSource = str | Callable[[], str | Awaitable[str]]


class HttpRefusal(msgspec.Struct):
    """What the server says when it refuses an HTTP request: a code and a message."""

    code: str
    message: str


class HttpErrorBody(msgspec.Struct):
    """The JSON body of a refused HTTP request."""

    error: HttpRefusal


def http_origin(control_url: str) -> str:
    """`http(s)://host:port` of a control socket URL (`ws(s)://host:port/v1/control`)."""
    parts = urlsplit(control_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return f"{scheme}://{parts.netloc}"
__all__ = ["ControlClient", "Subscription", "TokenSource"]


class ControlClient:
    """Connects to `url` with a control token: a string, or a token provider (a callable returning a
    fresh one, maybe awaitable), which is called before every connect and, on the server's
    `auth.expiring` or `auth.expired`, for a token sent with `auth.refresh` so the socket stays open."""

    def __init__(
        self,
        url: str,
        token: TokenSource,
        *,
        options: ClientOptions | None = None,
        http: aiohttp.ClientSession | None = None,
    ) -> None:
        self.url = url
        self.options = options or ClientOptions()
        self.stats = ClientStats()
        self.connection_state = ConnectionState.DISCONNECTED
        self._core = ClientCore()
        self.hello: dict[str, Any] | None = None
        self._token = token
        self._http = http
        self._own_http = http is None
        self._hub = EventHub()
        self._link: Link | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._fatal: BaseException | None = None
        self._connected = asyncio.Event()
        self._wanted = asyncio.Event()  # a request waits for a link (ends an idle pause)
        self._audio_open = asyncio.Event()
        self._audio: AudioSender | None = None
        self._ended: asyncio.Future[SessionEnded] | None = None
        self._dropped_seen = 0
        self._auth_refresh: asyncio.Task[None] | None = None
        #: Starting a new session after the server lost ours (`session.ended {reason: "lost"}`).
        self._restart: asyncio.Task[None] | None = None

    # -- state (kept by the core) ------------------------------------------------------------------
    @property
    def session_state(self) -> SessionState:
        return self._core.session_state

    @session_state.setter
    def session_state(self, state: SessionState) -> None:
        self._core.session_state = state

    @property
    def session(self) -> SessionReady | None:
        """The last `session.ready` (a resume's included)."""
        return self._core.session

    @property
    def session_id(self) -> str | None:
        return self._core.session_id

    @property
    def last_seq(self) -> int:
        """The highest `seq` of this session's events delivered to the caller."""
        return self._core.last_seq

    @property
    def _requests(self) -> dict[str, asyncio.Future[Event]]:
        """Requests waiting for their reply, by id (the core's table)."""
        return self._core.pending

    # -- events ------------------------------------------------------------------------------------
    def on(self, callback: Callback, types: Iterable[str] | None = None) -> Callable[[], None]:
        """Call `callback(event)` for every event (or only `types`); returns a function that removes it."""
        return self._hub.on(callback, types)

    def events(self) -> AsyncIterator[Event]:
        """`async for event in client.events()`: every event from now until the client closes."""
        return self._hub.stream()

    # -- connection ----------------------------------------------------------------------------------
    async def connect(self, *, retry: bool = False) -> dict[str, Any]:
        """Open the control socket; returns `hello`. With `retry`, a failed first attempt backs off too."""
        if self._supervisor is not None:
            raise ClientError("connect() was already called")
        if self._http is None:
            self._http = aiohttp.ClientSession()
        first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._supervisor = asyncio.create_task(self._supervise(first, retry))
        await first
        assert self.hello is not None
        return self.hello

    async def close(self, *, stop_session: bool = False, timeout_s: float = 30.0) -> None:
        """Close the socket (optionally stopping the session first). The client cannot be reused."""
        if stop_session and self.session_state in LIVE:
            with contextlib.suppress(ClientError, asyncio.TimeoutError):
                await self.stop_session(timeout_s=timeout_s)
        self._set_connection(ConnectionState.CLOSING)
        for task in (self._auth_refresh, self._restart):
            if task is not None:
                task.cancel()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(BaseException):
                await self._supervisor
        if self._link is not None:
            await self._link.close()
            self._link = None
        self._fail_pending(GaveUp("the client was closed"))
        self._set_connection(ConnectionState.DISCONNECTED)
        self._hub.close()
        if self._own_http and self._http is not None:
            await self._http.close()

    async def __aenter__(self) -> ControlClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- session ---------------------------------------------------------------------------------
    async def start_session(
        self,
        *,
        transport: str = "ws",
        sample_rate: int = 16000,
        channels: int = 1,
        interim: bool = True,
        **extra: Any,
    ) -> SessionReady:
        """Start a session (`sample_rate`/`channels` describe the PCM16 you will send over ws; `extra`:
        further `session.start` fields, e.g. `room`, `echo`).

        The server checks the values: one it does not take is a `ServerError` with the protocol's code.
        """
        if self.session_state not in (SessionState.NONE, SessionState.ENDED):
            raise ClientError(f"a session is already {self.session_state.value}")
        audio = None
        self._audio = None
        if transport == "ws":  # the casts: values are checked by the server, which answers with a coded error
            audio = AudioFormat(sample_rate=cast(SampleRate, sample_rate), channels=cast(Channels, channels))
            self._audio = AudioSender(sample_rate, channels, self.options, self._core.new_id)
        request = SessionStart(transport=cast(Transport, transport), interim=interim, audio=audio, **extra)
        self._core.begin_session(request)
        self._dropped_seen = 0
        self._ended = asyncio.get_running_loop().create_future()
        while True:
            link = await self._wait_connected()
            try:
                ready = await self._request(link, request)
            except ConnectionLost:
                continue  # the server may have started it; a second start replaces that one
            except BaseException:
                self._core.session_refused()
                raise
            break
        assert isinstance(ready, SessionReady)
        self._core.session_started()
        self._open_audio()
        return ready

    def send_audio(self, pcm: bytes) -> None:
        """Queue PCM16 audio of the announced format; never blocks. Buffered while disconnected."""
        if self._audio is None or self.session_state not in (SessionState.STARTING, *LIVE):
            raise ClientError("no ws session to send audio to; call start_session(transport='ws') first")
        self._audio.push(pcm)
        self._note_drops()

    async def write_audio(self, pcm: bytes, *, window_s: float = 2.0) -> None:
        """Like `send_audio`, but waits while more than `window_s` of audio is unconfirmed.

        For files streamed faster than real time: nothing is ever dropped, even during an outage.
        Live sources (a microphone) should use `send_audio`, which never waits.
        """
        self.send_audio(pcm)
        audio = self._audio
        assert audio is not None
        limit = audio.seconds(min(window_s, self.options.audio_buffer_s / 2))
        while audio.buffer.buffered_bytes > limit:
            if self._fatal is not None:
                raise self._fatal
            if self.session_state not in (SessionState.STARTING, *LIVE):
                raise ClientError(f"the session is {self.session_state.value}")
            audio.progress.clear()
            await audio.progress.wait()

    async def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every queued audio frame is sent and confirmed by the server."""

        async def drained() -> None:
            audio = self._audio
            while audio is not None and not audio.settled:
                if self._fatal is not None:
                    raise self._fatal
                if self.session_state not in (SessionState.STARTING, *LIVE):
                    return
                audio.progress.clear()
                await audio.progress.wait()

        await asyncio.wait_for(drained(), timeout_s)

    async def stop_session(self, *, timeout_s: float = 60.0) -> SessionEnded:
        """Send the rest of the audio, stop the session and wait for `session.ended` (its finals come first)."""
        if self.session_state not in LIVE or self._ended is None:
            raise ClientError("no session to stop")
        ended = self._ended
        await asyncio.wait_for(self._stop(ended), timeout_s)
        return ended.result()

    async def _stop(self, ended: asyncio.Future[SessionEnded]) -> None:
        await self.flush()
        # ACTIVE becomes STOPPING: the stop is sent now if the link is up; every later link resumes
        # the session and sends it again.
        if self._core.stopping() and self._connected.is_set() and self._link is not None:
            with contextlib.suppress(ConnectionLost):
                await self._send_stop(self._link)
        await asyncio.shield(ended)

    async def refresh_token(self) -> Event:
        """LiveKit sessions: ask for a fresh LiveKit token (answered by a `token` event)."""
        return await self.request(TokenRefresh())

    async def send_vad(self, speaking: bool) -> None:
        """LiveKit sessions with VAD gating: report the client's own voice activity."""
        await self._send(await self._wait_connected(), Vad(speaking=speaking))

    # -- HTTP ---------------------------------------------------------------------------------------
    async def download(self, path: str) -> bytes:
        """GET `path` on the server's HTTP origin with the control token, e.g. `recording.ready`'s
        `url` or `transcript_url`; a refusal is a ServerError with the server's code."""
        if self._http is None:
            raise ClientError("connect() first")
        url = http_origin(self.url) + path
        async with self._http.get(url, headers={"Authorization": f"Bearer {await self._token_now()}"}) as response:
            body = await response.read()
            if response.status == 200:
                return body
            try:
                refusal = msgspec.json.decode(body, type=HttpErrorBody).error
            except msgspec.DecodeError:  # ValidationError included: not the server's coded answer
                raise ServerError("http_error", f"GET {path} answered HTTP {response.status}") from None
            raise ServerError(refusal.code, refusal.message, msgspec.to_builtins(refusal))

    # -- monitor subscriptions --------------------------------------------------------------------
    async def subscribe(
        self, *, session_id: str | None = None, user: str | None = None, events: Iterable[str] | None = None
    ) -> Subscription:
        """Watch another session (or every session of a user); raises ServerError `not_allowed` if refused."""
        request = self._core.subscribe_request(session_id, user, events)
        reply = await self.request(request)
        return self._core.subscribed(request, reply)

    async def unsubscribe(self, subscription: Subscription) -> None:
        await self.request(self._core.unsubscribed(subscription))

    # -- requests ----------------------------------------------------------------------------------
    async def request(self, message: Request | dict[str, Any]) -> Event:
        """Send a request (a `control.schema` request struct) once connected and return its reply event
        (ServerError on `error`). A JSON object is checked against the schema first: one the server
        would refuse raises the same ServerError without being sent."""
        return await self._request(await self._wait_connected(), _as_request(message))

    async def ping(self) -> float:
        """Round-trip time of a `ping` in seconds."""
        started = time.monotonic()
        await self.request(Ping())
        return time.monotonic() - started

    def _new_id(self, kind: str) -> str:
        return self._core.new_id(kind)

    async def _request(self, link: Link, request: Request) -> Event:
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        wire = self._core.begin_request(request, future)
        assert isinstance(wire.id, str)  # the core's ids
        try:
            await self._send(link, wire)
            return await asyncio.wait_for(asyncio.shield(future), self.options.request_timeout_s)
        finally:
            self._core.end_request(wire.id)

    async def _send(self, link: Link, request: Request) -> None:
        try:
            await link.send_request(request)
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as error:
            raise ConnectionLost(f"could not send {request.type}: {error}") from None

    async def _wait_connected(self) -> Link:
        """The current link once it is up and restored; raises if the client gave up or was closed."""
        while True:
            if self._fatal is not None:
                raise self._fatal
            if self._supervisor is None:
                raise ClientError("not connected: call connect() first")
            if self.connection_state is ConnectionState.CLOSING:
                raise GaveUp("the client is closed")
            if self._connected.is_set() and self._link is not None:
                return self._link
            self._wanted.set()
            waiter = asyncio.ensure_future(self._connected.wait())
            await asyncio.wait({waiter, self._supervisor}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()

    # -- supervisor --------------------------------------------------------------------------------
    async def _token_now(self) -> str:
        if isinstance(self._token, str):
            return self._token
        token = self._token()
        return await token if inspect.isawaitable(token) else token

    async def _supervise(self, first: asyncio.Future[None], retry_first: bool) -> None:
        attempt = 0
        try:
            while True:
                self._set_connection(ConnectionState.CONNECTING, attempt=attempt)
                try:
                    assert self._http is not None
                    link = await Link.open(self._http, self.url, await self._token_now(), self.options.connect_timeout_s)
                except AuthRejected as error:
                    return self._give_up(error, first)
                except (TimeoutError, aiohttp.ClientError, OSError) as error:
                    if not first.done() and not retry_first:
                        return self._give_up(ClientError(f"could not connect to {self.url}: {error!r}"), first)
                    if not self.options.backoff.allows(attempt):
                        return self._give_up(GaveUp(f"gave up after {attempt} reconnect attempts: {error!r}"), first)
                    delay = self.options.backoff.delay(attempt)
                    attempt += 1
                    self._set_connection(ConnectionState.DISCONNECTED, error=repr(error), retry_in_s=round(delay, 3))
                    await asyncio.sleep(delay)
                    continue
                self.stats.connects += 1
                if await self._serve_link(link, first):
                    attempt = 0
                if link.ws.close_code == CLOSE_START_TIMEOUT and self.session_state not in LIVE:
                    await self._idle()
                    attempt = 0
                    continue
                self._set_connection(ConnectionState.DISCONNECTED)
                delay = self.options.backoff.delay(attempt)
                attempt += 1
                await asyncio.sleep(delay)
                self.stats.reconnects += 1
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # a bug: surface it instead of hanging the caller
            log.exception("control client supervisor failed")
            self._give_up(error, first)

    async def _idle(self) -> None:
        """The server closed a socket that started nothing (`ROOMSCRIBE_START_TIMEOUT_S`): stay
        disconnected until a request needs the socket, instead of reconnecting in a loop."""
        self._wanted.clear()
        self._set_connection(ConnectionState.DISCONNECTED, idle=True)
        await self._wanted.wait()

    def _give_up(self, error: BaseException, first: asyncio.Future[None]) -> None:
        self._fatal = error
        self._fail_pending(error)
        if not first.done():
            first.set_exception(error)
        self._publish_notice(NoticeCode.CONNECTION_FAILED, str(error))
        self._set_connection(ConnectionState.DISCONNECTED)

    async def _serve_link(self, link: Link, first: asyncio.Future[None]) -> bool:
        """Run one link until it drops; True when it got as far as restoring the session."""
        self._link = link
        self.hello = link.hello
        self._set_connection(ConnectionState.CONNECTED)
        self._hub.publish(parse_event(link.hello))
        dead: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        tasks = [
            asyncio.create_task(self._read(link)),
            asyncio.create_task(self._heartbeat(link, dead)),
            asyncio.create_task(self._write_audio(link)),
        ]
        restore = asyncio.create_task(self._restore(link, first))
        restored = False
        try:
            reader = tasks[0]
            watched: set[asyncio.Future[Any]] = {reader, dead, restore}
            while not (reader.done() or dead.done()):
                await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                if restore in watched and restore.done():
                    watched.discard(restore)
                    error = restore.exception()
                    if error is not None:  # the link is unusable without its session: drop it
                        if not isinstance(error, (ConnectionLost, asyncio.TimeoutError)):
                            log.error("restoring the session on a new link failed", exc_info=error)
                        break
        finally:
            restored = restore.done() and not restore.cancelled() and restore.exception() is None
            self._connected.clear()
            self._audio_open.clear()
            for task in (*tasks, restore):
                task.cancel()
            await asyncio.gather(*tasks, restore, return_exceptions=True)
            self._fail_pending(ConnectionLost("the control socket dropped"))
            if self._audio is not None:
                self.stats.frames_resent += self._audio.rewind()
            self._link = None
            await link.close()
        return restored

    def _fail_pending(self, error: BaseException) -> None:
        self._core.fail_pending(error)
        if isinstance(error, (GaveUp, AuthRejected)) or error is self._fatal:
            if self._ended is not None and not self._ended.done():
                self._ended.set_exception(error)
                self._ended.exception()  # retrieved: nobody may be waiting for it
            self._wake_audio_waiters()

    async def _restore(self, link: Link, first: asyncio.Future[None]) -> None:
        """On a new link: resume the session, renew subscriptions, then let audio flow."""
        if self._core.needs_resume:
            await self._resume(link)
        for subscription in list(self._core.subscriptions.values()):
            await self._renew(link, subscription)
        self._connected.set()
        if not first.done():
            first.set_result(None)
        if self.session_state in LIVE:
            self._open_audio()
        if self.session_state is SessionState.STOPPING:
            await self.flush()  # the audio the stop must follow
            await self._send_stop(link)

    async def _resume(self, link: Link) -> None:
        resume = self._core.resume_request()  # the session is RESUMING until resume_done()
        try:
            ready = await self._request(link, resume)
        except ServerError:  # session.not_found: grace period over, or it ended while we were away
            resumed_from, _ = self._core.resume_done()
            await self._session_lost(link, resumed_from)
            return
        except BaseException:
            self._core.resume_done()  # cancelled with the link: the next link tries again
            raise
        self.stats.resumes += 1
        _, received_bytes = self._core.resume_done(ready)
        if self._audio is not None:
            assert isinstance(ready, SessionReady)
            self.stats.frames_resent -= self._audio.resumed(received_bytes)
        self._publish_notice(NoticeCode.SESSION_RESUMED, f"resumed {self.session_id} after seq {self.last_seq}",
                             session_id=self.session_id, last_seq=self.last_seq)

    async def _restart_lost(self, link: Link) -> None:
        """The server lost the session (`session.ended {reason: "lost"}`: a cluster's Redis lost its
        state): audio it had not confirmed goes to a new session, started as after a failed resume."""
        self._audio_open.clear()  # no session to send to until the new one is ready
        if self._audio is not None:
            self.stats.frames_resent += self._audio.rewind()
        await self._session_lost(link, SessionState.ACTIVE)
        if self._core.session_state is SessionState.ACTIVE:
            self._open_audio()

    async def _session_lost(self, link: Link, was: SessionState) -> None:
        """The server no longer has the session (grace period over, it ended while we were away, or
        the server lost it: `session.ended {reason: "lost"}`): start a new one if the options say so."""
        lost_id = self.session_id
        if was is SessionState.STOPPING or not self.options.restart_lost_session:
            return self._lose_session(f"session {lost_id} could not be resumed")
        assert self._core.start_request is not None
        give_up_at = time.monotonic() + self.options.restart_busy_s
        while True:
            try:
                await self._request(link, self._core.start_request)
                break
            except ServerError as error:
                wait_s = error.raw.get("retry_after") if error.code == "server.busy" else None
                if not isinstance(wait_s, (int, float)) or time.monotonic() + wait_s > give_up_at:
                    return self._lose_session(f"session {lost_id} could not be resumed and a new one was refused: {error}")
                await asyncio.sleep(wait_s)  # the server said when it may have room again
        self.stats.sessions_restarted += 1
        if self._audio is not None:
            self._audio.restarted()
        self._core.restarted()
        self._publish_notice(NoticeCode.SESSION_RESTARTED, f"session {lost_id} could not be resumed; started {self.session_id}",
                             lost_session_id=lost_id, session_id=self.session_id)

    def _lose_session(self, message: str) -> None:
        """End the session locally (reason `lost`): events after `last_seq` may be missing."""
        lost_id = self.session_id or ""
        self._end_session(SessionEnded(session_id=lost_id, reason="lost"))
        self._publish_notice(NoticeCode.SESSION_LOST, message, session_id=lost_id, last_seq=self.last_seq)

    async def _send_stop(self, link: Link) -> None:
        await self._send(link, SessionStop(id=self._new_id("stop")))

    async def _renew(self, link: Link, subscription: Subscription) -> None:
        self._core.renewing(subscription)
        try:
            reply = await self._request(link, subscription.request)
        except ServerError as error:
            self._publish_notice(NoticeCode.SUBSCRIPTION_LOST, f"could not renew {subscription.id}: {error}",
                                 subscription_id=subscription.id)
            return
        old_id = self._core.renewed(subscription, reply)
        self._publish_notice(NoticeCode.SUBSCRIPTION_RENEWED, f"{old_id} is now {subscription.id}",
                             old_subscription_id=old_id, subscription_id=subscription.id)

    # -- per-link tasks ------------------------------------------------------------------------------
    async def _read(self, link: Link) -> None:
        with contextlib.suppress(aiohttp.ClientError, ConnectionError):
            async for raw in link.messages():
                self._on_message(raw)

    async def _heartbeat(self, link: Link, dead: asyncio.Future[None]) -> None:
        """Ping every `ping_interval_s`; a link silent for `dead_after_s` is declared dead.

        While a slow request is being served (session.start, session.stop, token.refresh) the
        server answers pings only afterwards, so the link then gets `request_timeout_s`.
        """
        while True:
            await asyncio.sleep(self.options.ping_interval_s)
            silent = time.monotonic() - link.last_received
            slow = self._core.slow_requests > 0 or self.session_state is SessionState.STOPPING
            limit = max(self.options.dead_after_s, self.options.request_timeout_s) if slow else self.options.dead_after_s
            if silent > limit:
                self.stats.dead_links += 1
                state = self.session_state.value
                self._publish_notice(NoticeCode.CONNECTION_DEAD, f"no message for {silent:.1f} s ({state}); reconnecting")
                dead.set_result(None)
                return
            with contextlib.suppress(ConnectionLost):
                await self._ping(link)

    async def _ping(self, link: Link) -> None:
        """A ping; in a ws session its pong also confirms every audio frame written before it."""
        audio = self._audio
        make = audio.ping_message if audio is not None else (lambda: Ping(id=self._new_id("p")))
        try:
            await link.send(make)
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as error:
            raise ConnectionLost(str(error)) from None

    async def _write_audio(self, link: Link) -> None:
        """Send the current ws session's buffered audio over this link, session after session."""
        while True:
            await self._audio_open.wait()
            audio = self._audio
            if audio is None:
                self._audio_open.clear()
                continue
            await audio.run(link, self._audio_open, partial(self._is_current_audio, audio))

    def _is_current_audio(self, audio: AudioSender) -> bool:
        return self._audio is audio

    def _open_audio(self) -> None:
        if self._audio is not None and self._connected.is_set():
            self._audio_open.set()
            self._audio.wake()

    def _wake_audio_waiters(self) -> None:
        """Let `flush`/`write_audio` and the writer re-check (the session ended, or the client gave up)."""
        if self._audio is not None:
            self._audio.progress.set()
            self._audio.wake()

    # -- incoming messages ---------------------------------------------------------------------------
    def _on_message(self, raw: dict[str, Any]) -> None:
        incoming = self._core.receive(raw)
        if incoming.pong_id is not None and self._audio is not None:
            self._audio.on_pong(incoming.pong_id)
        if incoming.refresh_auth:
            self._refresh_auth()
        if incoming.duplicate:
            self.stats.duplicates_dropped += 1
            return
        if incoming.ended is not None:
            if incoming.ended.reason == "lost" and self.options.restart_lost_session and self._link is not None:
                self._restart = asyncio.get_running_loop().create_task(self._restart_lost(self._link))
            else:
                self._session_over(incoming.ended)
        if incoming.deliver:
            self._hub.publish(incoming.event)

    def _refresh_auth(self) -> None:
        """Send a fresh control token from the provider (one refresh at a time; none for a fixed string)."""
        if isinstance(self._token, str) or (self._auth_refresh is not None and not self._auth_refresh.done()):
            return
        self._auth_refresh = asyncio.get_running_loop().create_task(self._send_fresh_token())

    async def _send_fresh_token(self) -> None:
        link = self._link
        if link is None:
            return  # the next connect gets a fresh token anyway
        try:
            token = await self._token_now()
            await self._request(link, self._core.auth_refresh_request(token))
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the server closes the socket at expiry; the reconnect asks the provider again
            self._publish_notice(NoticeCode.AUTH_REFRESH_FAILED, f"could not refresh the control token: {error}")

    def _end_session(self, ended: SessionEnded) -> None:
        if self._core.end_session(ended):
            self._session_over(ended)

    def _session_over(self, ended: SessionEnded) -> None:
        """The core has ended the session: stop the audio and settle `stop_session`'s wait."""
        self._audio_open.clear()
        self._wake_audio_waiters()
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(ended)

    # -- notices -------------------------------------------------------------------------------------
    def _set_connection(self, state: ConnectionState, **data: Any) -> None:
        if state is self.connection_state and not data:
            return
        if self.connection_state is ConnectionState.CLOSING and state is not ConnectionState.DISCONNECTED:
            return
        self.connection_state = state
        self._publish_notice(NoticeCode.CONNECTION_STATE, state.value, state=state.value, **data)

    def _note_drops(self) -> None:
        if self._audio is None or self._audio.buffer.dropped_frames == self._dropped_seen:
            return
        self.stats.audio_frames_dropped = self._audio.buffer.dropped_frames
        self.stats.audio_seconds_dropped = self._audio.dropped_seconds
        if self._dropped_seen == 0:
            full = f"audio buffer full ({self.options.audio_buffer_s:g} s): dropping the oldest audio"
            self._publish_notice(NoticeCode.AUDIO_DROPPED, full)
        self._dropped_seen = self._audio.buffer.dropped_frames

    def _publish_notice(self, code: NoticeCode, message: str, **data: Any) -> None:
        self._hub.publish(notice(code, message, **data))


def _as_request(message: Request | dict[str, Any]) -> Request:
    """`message` as a schema request; a JSON object the server would refuse raises its ServerError."""
    if isinstance(message, Request):
        return message
    try:
        return decode_request(json.dumps(message))
    except ProtocolError as error:
        raise ServerError(error.code, error.message, error.to_message().raw) from None
