"""HTTP downloads of session recordings: `GET /v1/sessions/{id}/recording` and `.../transcript`.

Authorised like a monitor subscription: a control token (`Authorization: Bearer`, or `?token=`) of
the session's user, or one with the `monitor` claim. A missing or bad token gets 401 (`auth.*`,
as for the control socket); a recording that does not exist, was pruned or is another user's gets
the same 404 `recording.not_found`, so the answer reveals nothing about other users' sessions.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from control.http_auth import auth_error_response, request_token
from control.recordings import Recordings
from control.transcript_formats import FORMATS, render
from tokens import AuthError, ControlClaims, verify_control_token

log = logging.getLogger(__name__)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


_NOT_FOUND = "no recording of that session that this token may read (unknown, pruned, or another user's)"


class RecordingRoutes:
    """The handlers, bound to the server's recordings and control secret."""

    def __init__(self, recordings: Recordings, *, secret: str, leeway_s: float) -> None:
        self.recordings = recordings
        self.secret = secret
        self.leeway_s = leeway_s

    async def _authorised_manifest(self, request: web.Request) -> dict[str, Any] | web.Response:
        """The session's manifest if the request's token may read it, else the error response."""
        try:
            claims: ControlClaims = verify_control_token(self.secret, request_token(request), leeway_s=self.leeway_s)
        except AuthError as error:
            return auth_error_response(error)
        session_id = request.match_info["session_id"]
        manifest = await self.recordings.manifest(session_id)
        if manifest is None or (manifest.get("user") != claims.user and not claims.allows("monitor")):
            log.info("recording of %r refused to user %r", session_id[:80], claims.user)
            return _error(404, "recording.not_found", _NOT_FOUND)
        return manifest

    async def audio(self, request: web.Request) -> web.StreamResponse:
        manifest = await self._authorised_manifest(request)
        if isinstance(manifest, web.Response):
            return manifest
        session_id = request.match_info["session_id"]
        files = manifest.get("audio") or []
        wanted = request.query.get("participant")
        entry = next((f for f in files if wanted is None or f.get("participant") == wanted), None)
        directory = self.recordings.session_dir(session_id)
        name = str(entry.get("file", "")) if entry is not None else ""
        if not name or Path(name).name != name or directory is None or not (directory / name).is_file():
            what = f"participant {wanted!r}" if wanted is not None else "this session"
            return _error(404, "recording.not_found", f"no audio was recorded for {what}")
        return web.FileResponse(
            directory / name,
            headers={
                "Content-Type": "audio/flac",
                "Content-Disposition": f'attachment; filename="{session_id}.flac"',
                "Cache-Control": "private, no-store",
            },
        )

    async def transcript(self, request: web.Request) -> web.StreamResponse:
        manifest = await self._authorised_manifest(request)
        if isinstance(manifest, web.Response):
            return manifest
        fmt = request.query.get("format", "json")
        if fmt not in FORMATS:
            return _error(400, "bad_request", f"format must be one of {', '.join(FORMATS)}")
        session_id = request.match_info["session_id"]
        body = render(fmt, session_id, await self.recordings.transcript(session_id))
        return web.Response(
            body=body.encode("utf-8"),
            headers={
                "Content-Type": FORMATS[fmt],
                "Content-Disposition": f'inline; filename="{session_id}.{fmt}"',
                "Cache-Control": "private, no-store",
            },
        )


def add_recording_routes(app: web.Application, recordings: Recordings, *, secret: str, leeway_s: float) -> None:
    routes = RecordingRoutes(recordings, secret=secret, leeway_s=leeway_s)
    app.router.add_get("/v1/sessions/{session_id}/recording", routes.audio)
    app.router.add_get("/v1/sessions/{session_id}/transcript", routes.transcript)
