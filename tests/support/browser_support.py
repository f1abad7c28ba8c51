"""Headless Debian Chromium for the browser tests (dev server and web example).

Playwright never downloads a browser here: it drives `/usr/bin/chromium` with the flags from
the LiveKit dev-server facts (playwright gives every launch a fresh temporary profile).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import msgspec
import pytest

from control.schema import ProtocolError, decode_request, decode_server_message

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
LK_DIST = ROOT / "node_modules" / "livekit-client" / "dist"
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]  # fmt: skip


def require_browser(suite: str) -> None:
    """Skip loudly when Chromium, the pinned livekit-client or playwright is missing; under CI, fail."""
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if not (LK_DIST / "livekit-client.umd.js").exists():
        missing.append(f"{LK_DIST} (run `npm ci` in {ROOT})")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package (pip install -e '.[test]')")
    if missing:
        msg = f"{suite} BROWSER TESTS NOT RUN: missing " + ", ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


class ControlFrames:
    """Checks every text frame on the page's control sockets against the wire schema (control/schema.py):
    what examples/web/app.js sends must decode as a request, what it receives as a server message."""

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self.off_schema: list[str] = []

    def watch(self, ws: Any) -> None:
        if "/v1/control" in ws.url:
            ws.on("framesent", self._sent)
            ws.on("framereceived", self._received)

    def _sent(self, payload: str | bytes) -> None:
        if isinstance(payload, str):
            self.sent += 1
            try:
                request = decode_request(payload)
            except ProtocolError as error:
                self.off_schema.append(f"page sent {payload[:300]!r}: {error.code}: {error.message}")
                return
            undeclared = set(json.loads(payload)) - set(request.__struct_fields__) - {"type"}
            if undeclared:  # the server ignores them: a misspelt option would go unnoticed
                self.off_schema.append(f"page sent {payload[:300]!r}: undeclared field(s) {sorted(undeclared)}")

    def _received(self, payload: str | bytes) -> None:
        if isinstance(payload, str):
            self.received += 1
            try:
                decode_server_message(json.loads(payload), exact=True)
            except (ValueError, msgspec.ValidationError) as error:
                self.off_schema.append(f"page received {payload[:300]!r}: {error}")
