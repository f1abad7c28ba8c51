"""Serves the web example (examples/web) and, in dev mode only, a token endpoint for it.

The page loads `livekit-client` from the repo's own `node_modules` (pinned in package-lock.json;
`npm ci` installs it), never from a CDN.
"""

from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web

from tokens import mint_control_token

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
WEB_DIR = ROOT / "examples" / "web"
LIVEKIT_CLIENT_DIST = ROOT / "node_modules" / "livekit-client" / "dist"
DEV_TOKEN_TTL_S = 3600


def livekit_client_available() -> bool:
    return (LIVEKIT_CLIENT_DIST / "livekit-client.umd.js").is_file()


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-store"})


async def _revalidate_page_files(request: web.Request, response: web.StreamResponse) -> None:
    """The page's own files change with the repo: browsers must revalidate them (ETag) every time."""
    if request.path.startswith("/web/") and "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = "no-cache"


def add_web_routes(app: web.Application, *, secret: str, dev_mode: bool) -> None:
    """`/` and `/web/*` for the page, `/vendor/livekit-client/*` for the SDK, and in dev mode
    `/dev/token?user=ID`, which mints a control token for anyone who asks (never in production)."""
    if not (WEB_DIR / "index.html").is_file():
        log.warning("examples/web/index.html is missing: the web example is not served")
        return
    app.router.add_get("/", _index)
    app.router.add_static("/web/", WEB_DIR, show_index=False)
    app.on_response_prepare.append(_revalidate_page_files)
    if livekit_client_available():
        app.router.add_static("/vendor/livekit-client/", LIVEKIT_CLIENT_DIST, show_index=False)
    else:
        log.warning("node_modules/livekit-client is missing (run `npm ci`): the page can only use the ws fallback")

    if dev_mode:

        async def dev_token(request: web.Request) -> web.Response:
            user = request.query.get("user", "").strip()
            if not user or len(user) > 64:
                return web.json_response(
                    {"error": {"code": "bad_request", "message": "give ?user=ID (1 to 64 characters)"}}, status=400
                )
            return web.json_response(
                {"token": mint_control_token(secret, user, ttl_s=DEV_TOKEN_TTL_S), "user": user, "dev_mode": True},
                headers={"Cache-Control": "no-store"},
            )

        app.router.add_get("/dev/token", dev_token)
        log.warning("dev mode: /dev/token mints control tokens for anyone (never enable in production)")
