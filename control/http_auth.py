"""Control tokens on HTTP requests: where the token is read from, and the answer when it is refused."""

from __future__ import annotations

from aiohttp import web

from tokens import AuthError


def request_token(request: web.Request) -> str | None:
    """`Authorization: Bearer <token>`, else `?token=` (browsers cannot set headers on every request)."""
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else ""
    return request.query.get("token")


def auth_error_response(error: AuthError) -> web.Response:
    """HTTP 401 with `{"error": {"code", "message"}}`."""
    return web.json_response({"error": {"code": error.code, "message": error.message}}, status=401)
