"""The web example (examples/web) in headless Chromium against a real control server on loopback.

Chromium's fake microphone plays examples/audio/jfk.wav in a loop; the page must show interims
and then the sentence as finals, over LiveKit (the embedded dev server) and over the ws fallback.
Screenshots go to artifacts/web-*.png.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from control.connection import ControlConnection
from control.server import ControlServer
from control_harness import make_settings, start_livekit_control
from speech_samples import JFK, JFK_TEXT, normalise, wer
from tokens import mint_control_token

pytestmark = [pytest.mark.browser]

MAX_WER = 0.15


def matching_windows(finals: list[str], reference: str) -> list[tuple[float, int, int]]:
    """Runs of consecutive finals that read as `reference` (WER ≤ MAX_WER), as (wer, first, end):
    the mic loops the file and the server may split the sentence at its pauses."""
    found = []
    for i in range(len(finals)):
        for j in range(i + 1, min(len(finals), i + 6) + 1):
            score = wer(reference, " ".join(finals[i:j]))
            if score <= MAX_WER:
                found.append((score, i, j))
    return found


async def wait_for_sentence(web: Any, page: Any, timeout: float, interim_shot: str | None = None) -> tuple[float, int, int]:
    """Wait until #finals holds the sentence and #interim showed text before those finals were
    complete (the MutationObserver records how many finals were on the page when each interim
    appeared). Under load the server drops interims (finals first), so a repetition's interims
    may be missing; any interim shown before the matching finals counts."""
    deadline = time.monotonic() + timeout
    windows: list[tuple[float, int, int]] = []
    while time.monotonic() < deadline:
        finals = await web.final_texts(page)
        windows = matching_windows(finals, JFK_TEXT)
        seen = await page.evaluate("window.__interimSeen.map(s => s.finals)")
        if interim_shot and (await page.text_content("#interim") or "").strip():
            await web.screenshot(page, interim_shot)  # the tentative text on screen, for a human to look at
            interim_shot = None
        for window in sorted(windows):
            _, _first, end = window
            if any(n < end for n in seen):
                return window
        await asyncio.sleep(0.5)
    raise AssertionError(
        f"no run of finals matches the sentence after interims (matches: {windows}); finals: {await web.final_texts(page)}; "
        f"interims seen: {await page.evaluate('window.__interimSeen')}; status: {await page.text_content('#status')!r}; "
        f"error: {await page.text_content('#error')!r}"
    )


async def first_phrase_after_listening(page: Any, timeout: float) -> str:
    """The final that carries "fellow americans" among utterances whose speech began after the
    server said `listening` (the fake microphone loops the file from page load, so its first pass
    may start before the agent hears it; a person speaks after the page says "Speak now")."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = await page.evaluate("window.roomscribe.events")
        listening = next((i for i, e in enumerate(events) if e.get("type") == "status" and e.get("code") == "listening"), None)
        if listening is not None:
            after = {e["utterance_id"] for e in events[listening:] if e.get("type") == "speech.start"}
            for e in events:
                if e.get("type") == "transcript.final" and e["utterance_id"] in after and "fellow americ" in normalise(e["text"]):
                    return str(e["text"])
        await asyncio.sleep(0.5)
    raise AssertionError(f"no final with 'fellow americans' after listening: {await page.evaluate('window.roomscribe.events')}")


async def check_transcript_shown(web: Any, page: Any, name: str, timeout: float) -> None:
    score, first, end = await wait_for_sentence(web, page, timeout, interim_shot=name.replace(".png", "-interim.png"))
    page_interims = await page.evaluate("window.roomscribe.interims.map(i => i.text)")
    assert page_interims, "the page recorded no interims"
    # One element per utterance, each with its time; none shown twice.
    items = await page.eval_on_selector_all(
        "#finals > li",
        "els => els.map(e => [e.dataset.session + ':' + e.dataset.utterance, e.querySelector('time').textContent])",
    )
    keys = [k for k, _ in items]
    assert len(keys) == len(set(keys)), f"a final is shown twice: {keys}"
    assert all(t.strip() for _, t in items)
    assert await page.is_hidden("#error"), await page.text_content("#error")
    await web.screenshot(page, name)
    print(f"{name}: WER {score:.2f} over finals {first}..{end - 1}; finals {await web.final_texts(page)}")


@pytest.mark.timeout(150)
async def test_livekit_mode_shows_interims_then_the_sentence(web, engine) -> None:
    server = await start_livekit_control(engine, dev_mode=True)
    try:
        async with web.page(JFK) as page:
            await page.goto(f"{server.http_url}/?user=lk-web")
            await page.click("#start")  # a real user gesture
            await page.wait_for_function("document.querySelectorAll('#finals > li').length >= 1", timeout=60000)
            # The control socket drops; the room and the agent live on and the page resumes.
            assert server.manager is not None
            (session,) = server.manager.sessions.values()
            assert isinstance(session.outbox, ControlConnection)
            await session.outbox.ws.close()
            await page.wait_for_function("window.roomscribe.state.resumes >= 1", timeout=30000)
            assert server.manager.sessions.get(session.id) is session
            await check_transcript_shown(web, page, "web-livekit.png", timeout=100)
            heard = await first_phrase_after_listening(page, timeout=60)
            # The first words intact (nothing cut or stretched at the start). Known gap: through the
            # browser's Opus and the dev server's re-encode the plural's soft "s" is sometimes lost
            # ("Americans" -> "America", about 1 run in 6); see the issue note.
            assert normalise(heard).startswith("and so my fellow americ"), f"the first phrase is not intact: {heard!r}"
            assert "LiveKit" in (await page.text_content("#pill-media") or "")
            assert await page.evaluate("window.roomscribe.state.sessionTransport") == "livekit"
            await page.click("#stop")
            await page.wait_for_function("window.roomscribe.state.phase === 'idle'", timeout=40000)
            for _ in range(100):  # the server ends the session (and deletes the room) after its last final
                if not server.manager.sessions:
                    break
                await asyncio.sleep(0.2)
            assert not server.manager.sessions
            stopped = [e for e in await page.evaluate("window.roomscribe.events") if e["type"] == "session.ended"]
            assert [e["reason"] for e in stopped] == ["stopped"]
    finally:
        await server.stop()


@pytest.mark.timeout(120)
async def test_livekit_vad_gating_publishes_on_speech(web, engine) -> None:
    """publish_gating "vad": the page runs its energy VAD, sends `vad`, and publishes (unmutes)
    its microphone on publish.start; transcripts still arrive."""
    server = await start_livekit_control(engine, dev_mode=True, publish_gating="vad")
    try:
        async with web.page(JFK) as page:
            await page.goto(f"{server.http_url}/?user=vad-web&autostart=1")
            await page.wait_for_function(
                "[...document.querySelectorAll('#finals > li .text')]"
                ".some(e => /fellow|americans|country|ask|not/i.test(e.textContent))",
                timeout=80000,
            )
            events = await page.evaluate("window.roomscribe.events")
            types = [e["type"] for e in events]
            ready = next(e for e in events if e["type"] == "session.ready")
            assert ready["livekit"]["publish_gating"] == "vad"
            assert "publish.start" in types
            assert next(e for e in events if e["type"] == "publish.start")["reason"] == "vad"
            assert await page.evaluate("window.roomscribe.state.vad.sent") is not None
            await web.screenshot(page, "web-livekit-vad.png")
    finally:
        await server.stop()


@pytest.mark.timeout(150)
async def test_ws_fallback_survives_a_control_socket_drop(web, engine) -> None:
    """?transport=ws&autostart=1: PCM from the AudioWorklet over the control socket. The server
    drops the socket after the first final; the page resumes without losing or repeating a final."""
    server = ControlServer(make_settings(dev_mode=True, grace_period_s=20.0), engine=engine)
    await server.start()
    try:
        async with web.page(JFK) as page:
            await page.goto(f"{server.http_url}/?user=ws-web&transport=ws&autostart=1")
            await page.wait_for_function("document.querySelectorAll('#finals > li').length >= 1", timeout=60000)
            assert await page.is_checked("#transport-ws")
            assert server.manager is not None
            (session,) = server.manager.sessions.values()
            assert session.transport == "ws"
            assert session.options.audio is not None and session.options.audio.sample_rate == 16000
            assert isinstance(session.outbox, ControlConnection)
            await session.outbox.ws.close()  # the server side of the control socket goes away
            await page.wait_for_function("window.roomscribe.state.resumes >= 1", timeout=30000)
            assert server.manager.sessions.get(session.id) is session
            await check_transcript_shown(web, page, "web-ws.png", timeout=90)
            finals = await page.evaluate("window.roomscribe.finals")
            sent = [e for e in await page.evaluate("window.roomscribe.events") if e.get("type") == "transcript.final"]
            assert len({f["utterance_id"] for f in finals}) == len({e["utterance_id"] for e in sent}), "a final was lost"
    finally:
        await server.stop()


@pytest.mark.timeout(60)
async def test_bad_token_is_explained(web, engine) -> None:
    server = ControlServer(make_settings(dev_mode=True), engine=engine)
    await server.start()
    try:
        async with web.page(JFK) as page:
            forged = mint_control_token("not-the-server-secret-" + "x" * 20, "mallory")
            await page.goto(f"{server.http_url}/?token={forged}&transport=ws")
            await page.click("#start")
            await page.wait_for_selector("#error:not([hidden])", timeout=20000)
            error = await page.text_content("#error") or ""
            assert "refused the control token" in error and "auth.bad_signature" in error, error
            assert await page.evaluate("window.roomscribe.state.phase") == "failed"
            await web.screenshot(page, "web-bad-token.png")

            await page.goto(f"{server.http_url}/?token=garbage&transport=ws")
            await page.click("#start")
            await page.wait_for_selector("#error:not([hidden])", timeout=20000)
            assert "auth.malformed_token" in (await page.text_content("#error") or "")
    finally:
        await server.stop()


@pytest.mark.timeout(60)
async def test_no_token_outside_dev_mode_is_explained(web, engine) -> None:
    server = ControlServer(make_settings(dev_mode=False, serve_web=True), engine=engine)
    await server.start()
    try:
        async with web.page(JFK) as page:
            await page.goto(f"{server.http_url}/?transport=ws")
            await page.click("#start")
            await page.wait_for_selector("#error:not([hidden])", timeout=20000)
            error = await page.text_content("#error") or ""
            assert "No control token" in error and "?token=" in error and "dev mode" in error, error
    finally:
        await server.stop()


@pytest.mark.timeout(90)
async def test_stopped_server_is_explained(web, engine) -> None:
    """LiveKit mode; the control server and its embedded LiveKit server stop under the page."""
    server = await start_livekit_control(engine, dev_mode=True)
    stopped = False
    try:
        async with web.page(JFK) as page:
            await page.goto(f"{server.http_url}/?user=gone")
            await page.click("#start")
            await page.wait_for_function("window.roomscribe.state.sessionReady === true", timeout=30000)
            await server.stop()
            stopped = True
            await page.wait_for_function(
                "(document.getElementById('error').textContent || '').includes('Cannot reach the roomscribe server')"
                " || (document.getElementById('error').textContent || '').includes('shutting down')",
                timeout=30000,
            )
            await page.wait_for_timeout(300)
            error = await page.text_content("#error") or ""
            status = await page.text_content("#status") or ""
            assert error.strip() and status.strip(), "blank page"
            await web.screenshot(page, "web-server-stopped.png")
            # Pressing Start again while the server is gone keeps explaining, it does not go blank.
            if await page.is_visible("#start"):
                await page.click("#start")
                await page.wait_for_function(
                    "(document.getElementById('error').textContent || '').includes('Cannot reach the roomscribe server')",
                    timeout=30000,
                )
                await web.screenshot(page, "web-server-unreachable.png")
    finally:
        if not stopped:
            await server.stop()


@pytest.mark.timeout(60)
async def test_switch_on_the_page_selects_the_ws_fallback(web, engine) -> None:
    server = await start_livekit_control(engine, dev_mode=True)
    try:
        async with web.page(JFK) as page:
            await page.goto(f"{server.http_url}/?user=switcher")
            assert not await page.is_checked("#transport-ws")
            await page.click("label.switch")
            assert await page.is_checked("#transport-ws")
            await page.click("#start")
            await page.wait_for_function("window.roomscribe.state.sessionReady === true", timeout=30000)
            assert await page.evaluate("window.roomscribe.state.sessionTransport") == "ws"
            await page.wait_for_function("window.roomscribe.state.framesSent > 25", timeout=20000)
            assert await page.is_disabled("#transport-ws")  # not while running
            await page.click("#stop")
            await page.wait_for_function("window.roomscribe.state.phase === 'idle'", timeout=20000)
    finally:
        await server.stop()


@pytest.mark.timeout(60)
async def test_page_follows_a_ws_only_server(web, engine) -> None:
    """No ?transport and no click on the switch: a server without LiveKit gets the ws fallback."""
    server = ControlServer(make_settings(dev_mode=True), engine=engine)  # ws only, no LiveKit
    await server.start()
    try:
        async with web.page(JFK) as page:
            await page.goto(f"{server.http_url}/?user=follower&autostart=1")
            await page.wait_for_function("window.roomscribe.state.sessionReady === true", timeout=30000)
            assert await page.evaluate("window.roomscribe.state.sessionTransport") == "ws"
            assert await page.is_checked("#transport-ws")
            await page.wait_for_function("window.roomscribe.state.framesSent > 25", timeout=20000)
    finally:
        await server.stop()


@pytest.mark.timeout(120)
async def test_token_refresh_and_livekit_rejoin_with_the_latest_token(web, engine) -> None:
    """Short client tokens make the server push `token` messages; when the LiveKit connection is
    lost the page rejoins with the newest token, publishes again and transcripts go on."""
    server = await start_livekit_control(engine, dev_mode=True, client_token_ttl_s=62)
    try:
        async with web.page(JFK) as page:
            await page.goto(f"{server.http_url}/?user=rejoin&autostart=1")
            await page.wait_for_function(
                "window.roomscribe.events.filter(e => e.type === 'token').length >= 2", timeout=40000
            )
            state = "window.roomscribe.state"
            ready_token = await page.evaluate("window.roomscribe.events.find(e => e.type === 'session.ready').livekit.token")
            latest = await page.evaluate(f"{state}.lkToken")
            assert latest != ready_token
            assert await page.evaluate(f"{state}.room.engine.token") == latest  # for the SDK's own reconnects
            await page.wait_for_function(f"{state}.lkPub !== null", timeout=30000)
            await page.evaluate(f"{state}.room.disconnect()")  # the LiveKit connection goes away
            await page.wait_for_function(
                f"window.roomscribe.lkJoins.length >= 2 && {state}.lkState === 'connected' && {state}.lkPub !== null",
                timeout=30000,
            )
            joins = await page.evaluate("window.roomscribe.lkJoins")
            tokens = [e["token"] for e in await page.evaluate("window.roomscribe.events") if e["type"] == "token"]
            assert joins[-1]["token"] != ready_token and joins[-1]["token"] in tokens
            rejoined_at = joins[-1]["t"]
            await page.wait_for_function(f"window.roomscribe.finals.some(f => f.t > {rejoined_at})", timeout=60000)
            assert await page.evaluate("window.roomscribe.finals.length") >= 1
    finally:
        await server.stop()


@pytest.mark.timeout(300)  # finals with words take the full 30-s window: slow on a loaded machine
async def test_keyterms_box_and_word_times_checkbox(web, engine) -> None:
    server = ControlServer(make_settings(dev_mode=True, finish_timeout_s=240.0), engine=engine)  # ws only, no LiveKit
    await server.start()
    try:
        async with web.page(JFK) as page:
            await page.goto(f"{server.http_url}/?user=keyterms")
            await page.fill("#keyterms", " Americans,  Kennedy ,")
            await page.check("#words")
            await page.click("#start")
            await page.wait_for_function("window.roomscribe.state.sessionReady === true", timeout=30000)
            assert await page.is_disabled("#keyterms") and await page.is_disabled("#words")  # not while running
            assert server.manager is not None
            (session,) = server.manager.sessions.values()
            assert (session.options.keyterms, session.options.words) == (["Americans", "Kennedy"], True)
            await page.wait_for_selector("#finals > li .word[title*='confidence']", timeout=40000)
            titles = await page.eval_on_selector_all("#finals > li .word", "els => els.map(e => e.title)")
            assert all("confidence" in t for t in titles), titles
            await page.click("#stop")
            await page.wait_for_function("window.roomscribe.state.phase === 'idle'", timeout=120000)
    finally:
        await server.stop()


@pytest.mark.timeout(60)
async def test_the_language_picker_asks_for_a_language_and_shows_the_refusal(web, engine) -> None:
    """tiny.en is English only: German is refused with the server's coded error; English starts."""
    server = ControlServer(make_settings(dev_mode=True), engine=engine)
    await server.start()
    try:
        async with web.page(JFK) as page:
            await page.goto(f"{server.http_url}/?user=polyglot&language=de")
            assert await page.input_value("#language") == "de"
            await page.click("#start")
            await page.wait_for_function("window.roomscribe.errors.length > 0", timeout=30000)
            assert [e["code"] for e in await page.evaluate("window.roomscribe.errors")] == ["language.unsupported"]
            await page.wait_for_function("window.roomscribe.state.phase === 'failed'", timeout=20000)
            await page.select_option("#language", "en")
            await page.click("#start")
            await page.wait_for_function("window.roomscribe.state.sessionReady === true", timeout=30000)
            assert await page.is_disabled("#language")  # not while running
    finally:
        await server.stop()
