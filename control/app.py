"""The aiohttp application: `GET /v1/control` (WebSocket), `GET /healthz` and, where sessions are
recorded, their downloads (control/recording_http.py).

Control tokens are checked before the WebSocket upgrade; a refused one gets HTTP 401 with
`{"error": {"code", "message"}}`.
"""

from __future__ import annotations

import contextlib
import logging
import weakref

from aiohttp import web

from control.admission import Limits, SocketCount
from control.config import Settings
from control.connection import ControlConnection
from control.http_auth import auth_error_response, request_token
from control.metrics import CONTENT_TYPE
from control.protocol import PROTOCOL_VERSION
from control.recording_http import add_recording_routes
from control.schema import CLOSE_TRY_AGAIN_LATER, ProtocolError, encode
from control.session import SessionManager
from control.web import add_web_routes
from roomscribe.common.logs import log_context
from tokens import AuthError, verify_control_token

log = logging.getLogger(__name__)

MAX_WS_MESSAGE_BYTES = 1024 * 1024
HEARTBEAT_S = 15.0
MANAGER_KEY = web.AppKey("manager", SessionManager)
SETTINGS_KEY = web.AppKey("settings", Settings)
SOCKETS_KEY = web.AppKey("sockets", weakref.WeakSet)
SOCKET_COUNT_KEY = web.AppKey("socket_count", SocketCount)


async def control_socket(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS_KEY]
    try:
        claims = verify_control_token(settings.control_secret, request_token(request), leeway_s=settings.control_token_leeway_s)
    except AuthError as error:
        log.info("control socket refused from %r: %s", request.remote, error.code)
        request.app[MANAGER_KEY].metrics.errors.labels(error.code).inc()
        return auth_error_response(error)
    log_context(user=claims.user)  # this request's task, and every task it starts
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=MAX_WS_MESSAGE_BYTES)
    if not ws.can_prepare(request).ok:
        return web.json_response(
            {"error": {"code": "not_websocket", "message": "this endpoint takes a WebSocket upgrade"}}, status=400
        )
    await ws.prepare(request)
    count = request.app[SOCKET_COUNT_KEY]
    refusal = count.admit(claims.user)
    if refusal is not None:
        log.info("control socket of user %r refused: %s", claims.user, refusal.code)
        request.app[MANAGER_KEY].metrics.errors.labels(refusal.code).inc()
        await _refuse(ws, refusal)
        return ws
    try:
        request.app[SOCKETS_KEY].add(ws)
        request.app[MANAGER_KEY].metrics.sockets_opened.inc()
        log.info("control socket opened for user %r", claims.user)
        connection = ControlConnection(ws, claims, request.app[MANAGER_KEY], settings, count.limits)
        await connection.run()
        stats = connection.stats()
        log.info(
            "control socket closed for user %r after %.1f s: %d messages sent, %d dropped, %d errors",
            claims.user, stats["duration_s"], stats["messages_sent"], stats["dropped"], stats["errors"],
            extra={"stats": stats},
        )  # fmt: skip
    finally:
        count.release(claims.user)
    return ws


async def _refuse(ws: web.WebSocketResponse, error: ProtocolError) -> None:
    """Tell a socket over a cap why (instead of `hello`), then close it: try again later."""
    with contextlib.suppress(ConnectionError):  # the client may be gone already
        await ws.send_str(encode(error.to_message()).decode())
    await ws.close(code=CLOSE_TRY_AGAIN_LATER, message=error.code.encode())


async def healthz(request: web.Request) -> web.Response:
    manager = request.app[MANAGER_KEY]
    sockets = request.app[SOCKET_COUNT_KEY].total
    report = {"status": "ok", "protocol": PROTOCOL_VERSION, "sessions": len(manager.sessions), "sockets": sockets}
    report.update(await manager.health())
    return web.json_response(report, status=200 if report["status"] == "ok" else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition of this server's metrics (control/metrics.py)."""
    return web.Response(body=request.app[MANAGER_KEY].metrics.render(), headers={"Content-Type": CONTENT_TYPE})


async def _close_sockets(app: web.Application) -> None:
    sockets = app[SOCKETS_KEY]
    for ws in list(sockets):
        await ws.close(code=1001, message=b"server shutting down")


def create_app(settings: Settings, manager: SessionManager) -> web.Application:
    """Build the control-plane application around a session manager (with the web example in
    dev mode, or when ROOMSCRIBE_SERVE_WEB is set)."""
    app = web.Application()
    app[SETTINGS_KEY] = settings
    app[MANAGER_KEY] = manager
    app[SOCKETS_KEY] = weakref.WeakSet()
    app[SOCKET_COUNT_KEY] = count = SocketCount(Limits.from_settings(settings))
    manager.metrics.watch(
        sockets=lambda: count.total, sessions=lambda: [session.transport for session in list(manager.sessions.values())]
    )
    app.router.add_get("/v1/control", control_socket)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.on_shutdown.append(_close_sockets)
    if manager.recordings is not None:
        add_recording_routes(app, manager.recordings, secret=settings.control_secret, leeway_s=settings.control_token_leeway_s)
    if settings.dev_mode or settings.serve_web:
        add_web_routes(app, secret=settings.control_secret, dev_mode=settings.dev_mode)
    return app
