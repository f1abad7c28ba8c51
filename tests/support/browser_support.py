"""Headless Debian Chromium for the browser tests (dev server and web example).

Playwright never downloads a browser here: it drives `/usr/bin/chromium` with the flags from
the LiveKit dev-server facts (playwright gives every launch a fresh temporary profile).
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any, Literal

import jsonschema
import msgspec
import pytest

from control.schema import ProtocolError, decode_request, decode_server_message, json_schema

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


Direction = Literal["ClientMessage", "ServerMessage"]


@cache
def _validator(definition: str) -> jsonschema.Draft202012Validator:
    """A validator of one definition of the published JSON Schema (`roomscribe schema`)."""
    published = json_schema()
    root = {key: value for key, value in published.items() if key != "anyOf"}
    return jsonschema.Draft202012Validator({**root, "$ref": f"#/$defs/{definition}"})


def json_schema_errors(message: Any, direction: Direction) -> list[str]:
    """What the published JSON Schema finds wrong with one decoded message (empty: it is valid).
    A known `type` is checked against its own definition, for errors that name the field."""
    union = json_schema()["$defs"][direction]
    definition = direction
    if isinstance(message, dict) and isinstance(message.get("type"), str):
        ref = union["discriminator"]["mapping"].get(message["type"])
        definition = ref.rsplit("/", 1)[-1] if ref else direction
    found = []
    for error in sorted(_validator(definition).iter_errors(message), key=lambda e: list(e.absolute_path)):
        deepest = jsonschema.exceptions.best_match([error])  # inside `anyOf` (e.g. a nullable field): the likely cause
        assert deepest is not None
        found.append(f"{'/'.join(map(str, deepest.absolute_path)) or '(message)'}: {deepest.message}")
    return found


class ControlFrames:
    """Checks every text frame on the page's control sockets against the wire schema (control/schema.py),
    twice: with msgspec (what examples/web/app.js sends must decode as a request with no undeclared
    field, what it receives as a server message) and with a JSON Schema validator against the published
    schema (`roomscribe schema`), which is what a client in another language would rely on."""

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
            self._check_json_schema("page sent", payload, "ClientMessage")
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
            self._check_json_schema("page received", payload, "ServerMessage")
            try:
                decode_server_message(json.loads(payload), exact=True)
            except (ValueError, msgspec.ValidationError) as error:
                self.off_schema.append(f"page received {payload[:300]!r}: {error}")

    def _check_json_schema(self, what: str, payload: str, direction: Direction) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            return  # reported by the msgspec check
        errors = json_schema_errors(message, direction)
        if errors:
            self.off_schema.append(f"{what} {payload[:300]!r}: JSON Schema: {'; '.join(errors)}")
