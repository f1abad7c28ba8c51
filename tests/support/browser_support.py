"""Headless Debian Chromium for the browser tests (dev server and web example).

Playwright never downloads a browser here: it drives `/usr/bin/chromium` with the flags from
the LiveKit dev-server facts (playwright gives every launch a fresh temporary profile).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
