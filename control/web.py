"""Serves the web example (examples/web) and, in dev mode only, a token endpoint for it.

The page loads `livekit-client` (pinned in package-lock.json; `npm ci` installs it) from the
checkout's `node_modules` or the copy a wheel carries, never from a CDN
(`roomscribe.common.package_data`).
"""

from __future__ import annotations

import logging

from aiohttp import web

from roomscribe.common.package_data import LIVEKIT_CLIENT_BUNDLE, livekit_client_dir, web_dir
from tokens import mint_control_token

log = logging.getLogger(__name__)

DEV_TOKEN_TTL_S = 3600


def livekit_client_available() -> bool:
    """Whether the livekit-client browser bundle is installed (else the page has only the ws fallback)."""
    return livekit_client_dir() is not None


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(web_dir() / "index.html", headers={"Cache-Control": "no-store"})


async def _revalidate_page_files(request: web.Request, response: web.StreamResponse) -> None:
    """The page's own files change with the repo: browsers must revalidate them (ETag) every time."""
    if request.path.startswith("/web/") and "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = "no-cache"


def add_web_routes(app: web.Application, *, secret: str, dev_mode: bool) -> None:
    """`/` and `/web/*` for the page, `/vendor/livekit-client/*` for the SDK, and in dev mode
    `/dev/token?user=ID`, which mints a control token for anyone who asks (never in production)."""
    page_dir = web_dir()
    if not (page_dir / "index.html").is_file():
        log.warning("%s is missing: the web example is not served", page_dir / "index.html")
        return
    app.router.add_get("/", _index)
    app.router.add_static("/web/", page_dir, show_index=False)
    app.on_response_prepare.append(_revalidate_page_files)
    sdk_dir = livekit_client_dir()
    if sdk_dir is not None:
        app.router.add_static("/vendor/livekit-client/", sdk_dir, show_index=False)
    else:
        log.warning("%s is not installed (run `npm ci`): the page can only use the ws fallback", LIVEKIT_CLIENT_BUNDLE)

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
