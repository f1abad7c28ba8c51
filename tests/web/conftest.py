"""Fixtures for the web example tests: the real model, headless Debian Chromium whose fake
microphone plays a WAV, and helpers to read the page.

Needs ``/usr/bin/chromium``, ``node_modules/livekit-client`` (``npm ci``) and the ``playwright``
package; without them the tests are skipped loudly, except under ``CI`` where they fail.
Playwright never downloads a browser here: it drives Debian's.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from browser_support import CHROMIUM, CHROMIUM_FLAGS, ROOT, ControlFrames, require_browser

ARTIFACTS = ROOT / "artifacts"

# Records every text #interim shows, independently of the page's own bookkeeping.
INTERIM_OBSERVER = """
window.__interimSeen = [];
document.addEventListener('DOMContentLoaded', () => {
  const el = document.getElementById('interim');
  if (!el) return;
  new MutationObserver(() => {
    const text = el.textContent.trim();
    if (text) window.__interimSeen.push({ text, t: Date.now(), finals: document.querySelectorAll('#finals > li').length });
  }).observe(el, { childList: true, characterData: true, subtree: true });
});
"""


@contextlib.asynccontextmanager
async def browser_page(mic_wav: Path | None = None) -> AsyncIterator[Any]:
    """A fresh headless Chromium page; its microphone plays `mic_wav` in a loop. Every control
    message it sends or receives is checked against the wire schema when the block ends."""
    from playwright.async_api import async_playwright

    args = list(CHROMIUM_FLAGS)
    if mic_wav is not None:
        args.append(f"--use-file-for-fake-audio-capture={mic_wav}")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        try:
            ctx = await browser.new_context(viewport={"width": 960, "height": 760})
            await ctx.add_init_script(INTERIM_OBSERVER)
            page = await ctx.new_page()
            page.on("console", lambda m: print("[page]", m.type, m.text))
            page.on("pageerror", lambda e: print("[page error]", e))
            frames = ControlFrames()
            page.on("websocket", frames.watch)
            yield page
            assert not frames.off_schema, f"control messages outside the wire schema: {frames.off_schema}"
            print(f"control frames checked against the schema: {frames.sent} sent, {frames.received} received")
        finally:
            await browser.close()


async def screenshot(page: Any, name: str) -> Path:
    path = ARTIFACTS / name
    await page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


async def final_texts(page: Any) -> list[str]:
    """The text of each final utterance in #finals, in order."""
    return await page.eval_on_selector_all("#finals > li .text", "els => els.map(e => e.textContent)")


class Web:
    """What the tests use (a fixture, since test modules here cannot import the conftest)."""

    ROOT = ROOT
    page = staticmethod(browser_page)
    screenshot = staticmethod(screenshot)
    final_texts = staticmethod(final_texts)


@pytest.fixture
def web() -> Web:
    require_browser("WEB EXAMPLE")
    ARTIFACTS.mkdir(exist_ok=True)
    return Web()
