"""`roomscribe push` / `roomscribe listen` entry points against a real server."""

from __future__ import annotations

import asyncio
import sys

import pytest

from control.schema import CommandSpec
from roomscribe.bench.first_words import printed_finals
from roomscribe.client.cli import listen_main, push_main
from roomscribe.client.control_client import ControlClient
from roomscribe.client.sources import wav_stream
from roomscribe.client.stream import format_event, send_stream
from speech_samples import JFK, LIBRI, ROOT

pytestmark = pytest.mark.timeout(90)

NO_ENV_FILE = ["--env-file", "/nonexistent/.env"]


async def test_push_file_prints_the_transcript(control, monkeypatch, capsys) -> None:
    monkeypatch.setenv("ROOMSCRIBE_CONTROL_SECRET", control.secret)
    code = await asyncio.to_thread(push_main, [str(JFK), "--url", control.server.url, "--fast", *NO_ENV_FILE])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "what your country can do for you" in out.lower()
    assert "session ended (stopped)" in out


async def test_push_with_keyterms_and_a_prompt(control, monkeypatch, capsys) -> None:
    monkeypatch.setenv("ROOMSCRIBE_CONTROL_SECRET", control.secret)
    waldo = str(ROOT / "examples" / "audio" / "asterisk_waldo.wav")
    argv = [waldo, "--url", control.server.url, "--fast", "--keyterm", "Waldo", "--keyterm", "Digium",
            "--prompt", "A phone menu.", "--no-interim", *NO_ENV_FILE]  # fmt: skip
    code = await asyncio.to_thread(push_main, argv)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Waldo's" in out, out
    code = await asyncio.to_thread(push_main, [waldo, "--url", control.server.url, "--keyterm", "", *NO_ENV_FILE])
    assert code == 2 and "prompt.invalid" in capsys.readouterr().err


def test_push_passes_its_decoding_options_on(monkeypatch) -> None:
    seen: dict[str, object] = {}

    async def fake_push(url: str, token: object, **kwargs: object) -> int:
        seen.update(kwargs)
        return 0

    monkeypatch.setattr("roomscribe.client.cli.push", fake_push)
    base = ["x.wav", "--token", "t", "--url", "ws://127.0.0.1:9/v1/control", *NO_ENV_FILE]
    assert push_main([*base, "--keyterm", "Waldo", "--keyterm", "Digium", "--prompt", "p", "--words"]) == 0
    assert (seen["keyterms"], seen["prompt"], seen["words"]) == (["Waldo", "Digium"], "p", True)
    assert push_main(base) == 0
    assert (seen["keyterms"], seen["prompt"], seen["words"]) == (None, None, None)  # the server's defaults


def test_a_final_with_words_prints_them_on_an_indented_line() -> None:
    final = {"type": "transcript.final", "seq": 3, "utterance_id": "u1", "text": "Ask not.", "start": 1.0, "end": 2.0,
             "reason": "silence", "words": [{"word": "Ask", "start": 1.02, "end": 1.3, "probability": 0.91,
                                             "confidence": 0.91},
                                            {"word": "not.", "start": 1.3, "end": 1.8, "probability": 0.5}]}  # fmt: skip
    assert format_event(final) == "[  1.00–  2.00] Ask not.\n    Ask 1.02–1.30 (0.91)  not. 1.30–1.80 (0.50)"
    assert printed_finals(format_event(final) or "") == ["Ask not."]


async def test_push_without_token_or_secret_explains_what_to_do(control, monkeypatch, capsys) -> None:
    monkeypatch.delenv("ROOMSCRIBE_CONTROL_SECRET", raising=False)
    code = await asyncio.to_thread(push_main, [str(JFK), "--url", control.server.url, *NO_ENV_FILE])
    assert code == 2 and "ROOMSCRIBE_CONTROL_SECRET" in capsys.readouterr().err


async def test_push_mic_without_sounddevice_gives_the_install_hint(monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import fails as if not installed
    code = await asyncio.to_thread(push_main, ["--mic", "--token", "t", "--url", "ws://127.0.0.1:9/v1/control", *NO_ENV_FILE])
    err = capsys.readouterr().err
    assert code == 2 and "roomscribe[mic]" in err


async def test_listen_prints_the_watched_sessions_finals_until_it_ends(control, monkeypatch, capsys) -> None:
    monkeypatch.setenv("ROOMSCRIBE_CONTROL_SECRET", control.secret)
    speaker = ControlClient(control.server.url, control.token("alice"))
    await speaker.connect()
    ready = await speaker.start_session(transport="ws")
    listener = asyncio.create_task(
        asyncio.to_thread(listen_main, ["--session-id", ready.session_id, "--url", control.server.url, *NO_ENV_FILE])
    )
    for _ in range(100):  # wait until the listener has subscribed
        if "watching" in capsys.readouterr().err or control.server.manager.sessions[ready.session_id].watchers:
            break
        await asyncio.sleep(0.05)
    await send_stream(speaker, wav_stream(LIBRI, speed=8.0, tail_silence_s=1.0))
    await speaker.stop_session(timeout_s=60)
    await speaker.close()
    assert await asyncio.wait_for(listener, 30) == 0
    out = capsys.readouterr().out
    assert "wizard" in out and "<alice>" in out and "session ended (stopped)" in out


async def test_listen_refused_without_permission(control, capsys) -> None:
    token = control.token("mallory")
    code = await asyncio.to_thread(
        listen_main, ["--user", "alice", "--token", token, "--url", control.server.url, *NO_ENV_FILE]
    )
    assert code == 2 and "not_allowed" in capsys.readouterr().err


async def test_push_language_the_model_cannot_serve_is_a_coded_error(control, monkeypatch, capsys) -> None:
    monkeypatch.setenv("ROOMSCRIBE_CONTROL_SECRET", control.secret)
    args = [str(JFK), "--url", control.server.url, "--fast", "--language", "de", *NO_ENV_FILE]
    code = await asyncio.to_thread(push_main, args)
    assert code == 2 and "language.unsupported" in capsys.readouterr().err


@pytest.mark.timeout(600)  # the base model, on a possibly shared machine
async def test_push_language_auto_prints_the_detected_language(base_engine, monkeypatch, capsys) -> None:
    from control_harness import serving

    async with serving(base_engine) as handle:
        monkeypatch.setenv("ROOMSCRIBE_CONTROL_SECRET", handle.secret)
        args = [str(JFK), "--url", handle.server.url, "--fast", "--language", "auto", "--no-interim", *NO_ENV_FILE]
        code = await asyncio.to_thread(push_main, args)
    out = capsys.readouterr().out
    assert code == 0, out
    finals = [line for line in out.splitlines() if line.startswith("[")]
    assert finals and all(line.split("]")[0].endswith(" en") for line in finals), out
async def test_listen_prints_commands_as_they_come(control, monkeypatch, capsys) -> None:
    monkeypatch.setenv("ROOMSCRIBE_CONTROL_SECRET", control.secret)
    speaker = ControlClient(control.server.url, control.token("alice"))
    await speaker.connect()
    commands = [CommandSpec(name="fellow", phrases=["my fellow americans"])]  # said in the JFK clip
    ready = await speaker.start_session(transport="ws", commands=commands)
    listener = asyncio.create_task(
        asyncio.to_thread(
            listen_main,
            ["--session-id", ready.session_id, "--events", "command,session.ended", "--url", control.server.url, *NO_ENV_FILE],
        )
    )
    for _ in range(100):  # wait until the listener has subscribed
        if "watching" in capsys.readouterr().err or control.server.manager.sessions[ready.session_id].watchers:
            break
        await asyncio.sleep(0.05)
    await send_stream(speaker, wav_stream(JFK, speed=8.0, tail_silence_s=1.0))
    await speaker.stop_session(timeout_s=60)
    await speaker.close()
    assert await asyncio.wait_for(listener, 30) == 0
    out = capsys.readouterr().out
    assert "command fellow ('my fellow americans')" in out and "<alice>" in out, out
