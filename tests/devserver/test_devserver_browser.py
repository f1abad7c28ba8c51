"""The browser SDK (``livekit-client``, pinned in package.json) in headless Chromium.

Needs Debian's ``/usr/bin/chromium`` and ``npm ci`` (``node_modules/livekit-client``). Missing
either skips loudly, except under ``CI`` where it fails. Playwright never downloads a browser.
"""

from __future__ import annotations

import asyncio
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web

from browser_support import CHROMIUM, CHROMIUM_FLAGS, LK_DIST, require_browser
from devserver_helpers import collect_audio, make_token, peak_hz, publish_tone, rms_dbfs, tone

PAGE = Path(__file__).parent / "browser" / "index.html"

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]


def _write_tone_wav(path: Path, freq: float, seconds: float = 10.0, rate: int = 48000) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(tone(freq, int(seconds * rate), rate, 0.5).tobytes())


@pytest.fixture
async def static_site() -> AsyncIterator[str]:
    """A tiny aiohttp site serving the test page and the pinned livekit-client build."""
    require_browser("DEV SERVER")
    app = web.Application()

    async def index(_: web.Request) -> web.FileResponse:
        return web.FileResponse(PAGE)

    app.router.add_get("/", index)
    app.router.add_static("/lk/", LK_DIST)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # aiohttp keeps the bound server private
    yield f"http://127.0.0.1:{port}/"
    await runner.cleanup()


@pytest.fixture
async def page(static_site: str, tmp_path: Path):
    """A fresh headless Chromium page whose fake microphone plays a 440 Hz tone."""
    from playwright.async_api import async_playwright

    wav = tmp_path / "tone440.wav"
    _write_tone_wav(wav, 440)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={wav}"])
        try:
            ctx = await browser.new_context()
            pg = await ctx.new_page()
            pg.on("console", lambda m: print("[page]", m.type, m.text))
            await pg.goto(static_site)
            await pg.wait_for_function("() => !!window.LivekitClient")
            yield pg
            await pg.evaluate("window.lkLeave()")
        finally:
            await browser.close()


MODES = [pytest.param(True, id="single-pc"), pytest.param(False, id="dual-pc")]


@pytest.mark.parametrize("single_pc", MODES)
async def test_python_hears_browser_microphone(server, connect, page, single_pc: bool) -> None:
    listener = await connect("python-listener")
    info = await page.evaluate("([u, t, s]) => window.lkJoin(u, t, s)",
                               [server.url, make_token("browser", "r1"), single_pc])
    assert info["identity"] == "browser"
    await page.evaluate("window.lkPublishMic()")
    track, _, who = await asyncio.wait_for(listener.first_track, 20)
    assert who.identity == "browser"
    samples = await asyncio.wait_for(collect_audio(track, 1.5, skip_s=1.0), 20)
    assert abs(peak_hz(samples, 48000) - 440) <= 5
    level, sent = rms_dbfs(samples), rms_dbfs(tone(440, 48000, 48000, 0.5))
    assert abs(level - sent) <= 6, f"level {level:.1f} dBFS vs {sent:.1f} dBFS in the wav"


@pytest.mark.parametrize("single_pc", MODES)
async def test_browser_hears_python(server, connect, page, single_pc: bool) -> None:
    speaker = await connect("python-speaker")
    pub = asyncio.create_task(publish_tone(speaker, 660))
    try:
        await page.evaluate("([u, t, s]) => window.lkJoin(u, t, s)",
                            [server.url, make_token("browser", "r1"), single_pc])
        await asyncio.sleep(1.0)
        rec = await page.evaluate("window.lkRecordRemote(1.0)")
        assert rec["identity"] == "python-speaker"
        samples = (np.asarray(rec["samples"], dtype=np.float64) * 32767).astype(np.int16)
        assert abs(peak_hz(samples, int(rec["rate"])) - 660) <= 5
        assert rms_dbfs(samples) > -20, f"too quiet: {rms_dbfs(samples):.1f} dBFS"
    finally:
        pub.cancel()


async def test_browser_sees_refusal_reason(server, page) -> None:
    err = await page.evaluate("([u, t]) => window.lkConnectError(u, t)",
                              [server.url, make_token("browser", "r1", secret="wrong")])
    assert err is not None and "signature is invalid" in err and "401" in err


@pytest.mark.parametrize("single_pc", MODES)
async def test_data_between_browser_and_python(server, connect, page, single_pc: bool) -> None:
    py = await connect("python")
    got: asyncio.Queue = asyncio.Queue()
    py.on("data_received", got.put_nowait)
    await page.evaluate("([u, t, s]) => window.lkJoin(u, t, s)",
                        [server.url, make_token("browser", "r1"), single_pc])
    await page.evaluate("window.lkListenData()")
    await page.evaluate("window.lkPublishData('from-browser', true)")
    pkt = await asyncio.wait_for(got.get(), 10)
    assert (pkt.data, pkt.topic, pkt.participant.identity) == (b"from-browser", "web", "browser")
    await asyncio.sleep(0.3)
    for reliable in (True, False):
        await py.local_participant.publish_data(f"from-python-{reliable}".encode(), reliable=reliable)
    await page.wait_for_function("() => window.dataReceived.length >= 1", timeout=10000)
    await asyncio.sleep(0.5)
    texts = await page.evaluate("window.dataReceived.map(d => d.text + '@' + d.from)")
    assert "from-python-True@python" in texts  # lossy may be dropped; reliable may not
