"""The HTTP side (signalling WebSocket, validate, Twirp) and the embeddable :class:`DevServer`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from typing import Any

from aiohttp import web

from . import netpolicy
from .auth import Authenticator, AuthError, JoinGrant
from .codec import JoinParamsError, bearer_token, parse_join_params
from .relay import install_fast_audio_level
from .room import Participant, RoomManager
from .session import Session
from .twirp import PREFIX, RoomService, make_handler

log = logging.getLogger("devserver")

DEFAULT_KEYS = {"devkey": "secret"}


@web.middleware
async def _cors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Let pages on any origin read validate/Twirp answers (the browser SDK fetches validate)."""
    resp = await handler(request)
    if not resp.prepared:  # a WebSocket response is already sent
        resp.headers["Access-Control-Allow-Origin"] = "*"
        resp.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
        resp.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
    return resp


class DevServer:
    """A small LiveKit-compatible server for development and tests.

    ``await start()`` binds ``host:port`` (``port=0`` picks a free port); ``url`` is the
    ``ws://`` URL for the SDKs and ``http_url`` the one for ``livekit-api``.

    Options: ``empty_timeout_s`` (close rooms empty this long), ``ping_interval_s`` and
    ``ping_timeout_s`` (sent to clients; silent clients are removed), ``single_pc`` (serve
    ``/rtc/v1``; ``False`` makes it 404 so clients fall back to dual PC), ``dual_pc`` (serve
    ``/rtc``), ``ice_addresses`` (``"loopback"`` default, ``"local"``, or a list of this
    machine's addresses), ``own_thread`` (run on a private uvloop thread; default ``True`` so the
    server never competes with the caller's event loop), ``own_process`` (run ``python -m
    devserver`` in a child process instead: no GIL sharing with the caller, as with a real
    server; ``rooms``/``call()`` are then unavailable, use the RoomService), ``low_latency_audio`` (hand each Opus
    packet to the decoder at once instead of aiortc's 4-frame jitter buffer; ~60 ms less delay).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 7880, keys: dict[str, str] | None = None,
                 empty_timeout_s: float = 20.0, *, ping_interval_s: int = 5, ping_timeout_s: int = 15,
                 single_pc: bool = True, dual_pc: bool = True, ice_addresses: Any = "loopback",
                 own_thread: bool = True, own_process: bool = False,
                 low_latency_audio: bool = True) -> None:
        self.host = host
        self.port = port
        self.keys = dict(keys or DEFAULT_KEYS)
        self.auth = Authenticator(self.keys)
        self.rooms = RoomManager(empty_timeout_s=empty_timeout_s)
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s
        self.single_pc = single_pc
        self.dual_pc = dual_pc
        self.ice_addresses = netpolicy.resolve_ice_addresses(ice_addresses)
        self.own_thread = own_thread and not own_process
        self.own_process = own_process
        self._proc: asyncio.subprocess.Process | None = None
        self._drain_task: asyncio.Task[None] | None = None  # reads the child's stdout after start-up
        self.low_latency_audio = low_latency_audio
        self.sessions: set[Session] = set()
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- addresses -----------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The signalling URL to give the SDKs (``ws://host:port``)."""
        return f"ws://{self._url_host}:{self.port}"

    @property
    def http_url(self) -> str:
        """The base URL for ``livekit-api`` (``http://host:port``)."""
        return f"http://{self._url_host}:{self.port}"

    @property
    def _url_host(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"[{host}]" if ":" in host else host

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Bind and serve; returns once the port is open."""
        if self.own_process:
            await self._start_process()
            return
        if not self.own_thread:
            await self._start()
            return
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._thread_main, args=(ready,),
                                        name=f"devserver:{self.port}", daemon=True)
        self._thread.start()
        await asyncio.wrap_future(ready)

    def _thread_main(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            import uvloop

            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        except ImportError:  # pragma: no cover - uvloop is a dependency
            loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._start())
        except BaseException as exc:
            ready.set_exception(exc)
            loop.close()
            return
        ready.set_result(None)
        loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    async def stop(self) -> None:
        """Disconnect everyone and close the port."""
        if self.own_process:
            await self._stop_process()
        elif self.own_thread:
            if self._loop is None or self._thread is None:
                return
            fut = asyncio.run_coroutine_threadsafe(self._stop(), self._loop)
            await asyncio.wrap_future(fut)
            self._loop.call_soon_threadsafe(self._loop.stop)
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 10)
            self._thread = None
            self._loop = None
        else:
            await self._stop()

    async def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the server's loop and return its result (for tests)."""
        if self.own_process:
            raise RuntimeError("call() needs an in-process server (own_process=False)")
        if not self.own_thread or self._loop is None:
            return fn(*args)

        async def _run() -> Any:
            return fn(*args)

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_run(), self._loop))

    async def _start_process(self) -> None:
        import os
        import re
        import sys

        from .cli import KEYS_ENV

        args = [sys.executable, "-m", "roomscribe.devserver", "--host", self.host, "--port", str(self.port),
                "--empty-timeout", str(self.rooms.empty_timeout_s),
                "--ice-addresses", ",".join(self.ice_addresses),
                "--ping-interval", str(self.ping_interval_s), "--ping-timeout", str(self.ping_timeout_s),
                "--log-level", logging.getLevelName(log.getEffectiveLevel())]
        args += [flag for flag, on in (("--no-single-pc", not self.single_pc),
                                       ("--no-dual-pc", not self.dual_pc),
                                       ("--no-low-latency-audio", not self.low_latency_audio)) if on]
        args.append("--allow-remote")  # the caller chose `host`: the CLI's loopback guard is for people
        env = dict(os.environ, PYTHONUNBUFFERED="1", OPENBLAS_NUM_THREADS="1",
                   **{KEYS_ENV: ",".join(f"{k}:{v}" for k, v in self.keys.items())})
        self._proc = await asyncio.create_subprocess_exec(
            *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=None)
        assert self._proc.stdout is not None
        try:
            async with asyncio.timeout(30):
                while True:
                    line = (await self._proc.stdout.readline()).decode()
                    if not line:
                        raise RuntimeError("dev server process exited during start-up")
                    match = re.search(r"LIVEKIT_URL=ws://\S+:(\d+)", line)
                    if match:
                        self.port = int(match.group(1))
                        break
        except BaseException:
            await self._stop_process()
            raise
        self._drain_task = asyncio.create_task(self._drain_stdout(self._proc), name="devserver-stdout")

    @staticmethod
    async def _drain_stdout(proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while await proc.stdout.readline():
            pass

    async def _stop_process(self) -> None:
        proc, self._proc = self._proc, None
        drain, self._drain_task = self._drain_task, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if drain is not None:
            await drain  # the exited child's stdout is at its end

    async def __aenter__(self) -> DevServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _start(self) -> None:
        install_fast_audio_level()
        netpolicy.install()
        app = self.make_app()
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("LiveKit dev server on %s (API keys: %s)", self.url, ", ".join(self.keys))

    async def _stop(self) -> None:
        self.rooms.close_all()
        await asyncio.sleep(0.05)
        for session in list(self.sessions):
            if not session.ws.closed:
                await session.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- HTTP ----------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        """The aiohttp application (usable on its own, e.g. with aiohttp's test client)."""
        app = web.Application(middlewares=[_cors])
        app.router.add_get("/", self._health)
        app.router.add_get("/rtc", self._rtc_dual)
        app.router.add_get("/rtc/validate", self._validate_dual)
        app.router.add_get("/rtc/v1", self._rtc_single)
        app.router.add_get("/rtc/v1/validate", self._validate_single)
        app.router.add_post(PREFIX + "{method}", make_handler(RoomService(self.rooms, self.auth)))
        app.router.add_route("OPTIONS", "/{tail:.*}", self._preflight)
        return app

    async def _preflight(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="OK")

    def _path_enabled(self, single_pc: bool) -> bool:
        return self.single_pc if single_pc else self.dual_pc

    def _grant(self, request: web.Request) -> JoinGrant:
        token = bearer_token(request.headers, request.query)
        # ``room`` is a dev-server extension: LiveKit takes the room from the token alone.
        return self.auth.verify_join(token, request.query.get("room") or None)

    def _room_full(self, grant: JoinGrant) -> AuthError | None:
        room = self.rooms.get(grant.room)
        if (room is not None and not room.closed and room.max_participants
                and len(room.participants) >= room.max_participants
                and grant.identity not in room.participants):
            return AuthError(403, f"room {room.name!r} is full ({room.max_participants} participants)")
        return None

    async def _validate(self, request: web.Request, single_pc: bool) -> web.Response:
        if not self._path_enabled(single_pc):
            return web.Response(status=404, text="404 page not found")
        try:
            full = self._room_full(self._grant(request))
            if full is not None:
                raise full
        except AuthError as exc:
            return web.Response(status=exc.status, text=exc.reason)
        return web.Response(text="success")

    async def _validate_dual(self, request: web.Request) -> web.Response:
        return await self._validate(request, False)

    async def _validate_single(self, request: web.Request) -> web.Response:
        return await self._validate(request, True)

    async def _rtc_dual(self, request: web.Request) -> web.StreamResponse:
        return await self._rtc(request, False)

    async def _rtc_single(self, request: web.Request) -> web.StreamResponse:
        return await self._rtc(request, True)

    async def _rtc(self, request: web.Request, single_pc: bool) -> web.StreamResponse:
        if not self._path_enabled(single_pc):
            return web.Response(status=404, text="404 page not found")
        try:
            grant = self._grant(request)
            params = parse_join_params(request.query, request.headers, single_pc)
        except AuthError as exc:
            log.info("join refused (%s): %s", exc.status, exc.reason)
            return web.Response(status=exc.status, text=exc.reason)
        except JoinParamsError as exc:
            return web.Response(status=400, text=str(exc))
        full = self._room_full(grant)
        if full is not None:
            return web.Response(status=full.status, text=full.reason)
        room = self.rooms.get_or_create(grant.room)
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        session = Session(ws, room, single_pc=single_pc, ice_addresses=self.ice_addresses,
                          ping_interval_s=self.ping_interval_s, ping_timeout_s=self.ping_timeout_s,
                          low_latency_audio=self.low_latency_audio)
        part = Participant(grant=grant, link=session, auto_subscribe=params.auto_subscribe)
        log.info("%s joins room %s (%s, %s PC)", grant.identity, grant.room, params.sdk or "?",
                 "single" if single_pc else "dual")
        self.sessions.add(session)
        try:
            await session.run(part, params.publisher_offer)
        finally:
            self.sessions.discard(session)
        return ws
