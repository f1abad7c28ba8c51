"""Keyterms, prompt and word times per session, end to end over the ws transport: real server on
loopback, real model, real speech (issue 15)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from agent.config import PipelineConfig
from control.config import ConfigError, Settings
from control_harness import serving
from roomscribe.client.audio_files import read_wav
from speech_samples import JFK, ROOT, pcm_frames, silence

pytestmark = pytest.mark.timeout(180)

#: The first sentence of Asterisk's IVR greeting (examples/audio/README.md: CC-BY-SA-3.0):
#: "Thank you for calling Super Awesome Company, Waldo's premier provider of perfect products."
WALDO = ROOT / "examples" / "audio" / "asterisk_waldo.wav"


async def transcribe(
    control: Any, user: str, path: Any, stop_timeout_s: float = 120.0, **start: Any
) -> tuple[list[dict[str, Any]], Any]:
    """Stream a recording through a ws session started with `start`; its finals and the client."""
    client = await control.connect(user)
    await client.send(type="session.start", id="s", transport="ws", **start)
    await client.wait_type("session.ready", id="s")
    for frame in pcm_frames(np.concatenate([read_wav(path).samples, silence(1.0)])):
        await client.ws.send_bytes(frame)
        await asyncio.sleep(0.02 / 8)  # 8× real time
    await client.send(type="session.stop", id="stop")
    await client.wait_type("session.ended", timeout=stop_timeout_s)
    await client.close()
    return client.of_type("transcript.final"), client


async def test_a_keyterm_makes_the_final_spell_a_name_the_model_misses(control) -> None:
    plain, _ = await transcribe(control, "plain", WALDO)
    text = " ".join(f["text"] for f in plain)
    assert "super awesome company" in text.lower(), text
    assert "waldo" not in text.lower(), f"tiny.en heard the name unaided, the test proves nothing: {text}"

    biased, client = await transcribe(control, "biased", WALDO, keyterms=["Waldo"])
    text = " ".join(f["text"] for f in biased)
    assert "Waldo's" in text, text
    assert "super awesome company" in text.lower(), text
    assert all("words" not in f for f in biased), "words only when asked"
    client.check_schema()


async def test_a_prompt_biases_the_decoder_too(control) -> None:
    finals, _ = await transcribe(control, "prompted", WALDO, prompt="Waldo's premier provider.")
    text = " ".join(f["text"] for f in finals)
    assert "Waldo's" in text, text


@pytest.mark.timeout(360)
async def test_words_carry_times_in_the_utterance_and_confidences(engine) -> None:
    # Finals with words take the model's full 30-s window: give `session.stop` time on a loaded machine.
    async with serving(engine, finish_timeout_s=240.0) as control:
        finals, client = await transcribe(control, "words", JFK, words=True, interim=False, stop_timeout_s=240.0)
    client.check_schema()
    assert finals, client.events
    starts = {e["utterance_id"]: e["start"] for e in client.of_type("speech.start")}
    ends = {e["utterance_id"]: e["end"] for e in client.of_type("speech.end")}
    heard: list[dict[str, Any]] = []
    for final in finals:
        words = final["words"]
        assert words, final
        assert " ".join(w["word"] for w in words).split() == final["text"].split()
        lo, hi = final["start"], final["end"]
        assert starts[final["utterance_id"]] == lo and ends[final["utterance_id"]] == hi
        for w in words:
            assert lo - 1e-6 <= w["start"] <= w["end"] <= hi + 1e-6, (w, lo, hi)
            assert 0.0 <= w["confidence"] <= 1.0
            assert w["confidence"] == pytest.approx(w["probability"], abs=1e-3)
        assert [w["start"] for w in words] == sorted(w["start"] for w in words)
        heard.extend(words)
    # "country", twice: where the offline model, run on the whole clip with word timestamps, puts it.
    model = engine.backend.loaded_model()
    audio = read_wav(JFK).samples.astype(np.float32) / 32768
    segments, _ = model.transcribe(audio, language="en", beam_size=1, word_timestamps=True, vad_filter=False)
    offline = [w for s in segments for w in (s.words or ())]
    expected = [w.start for w in offline if w.word.strip(" ,.").lower() == "country"]
    got = [w["start"] for w in heard if w["word"].strip(" ,.").lower() == "country"]
    print("country offline vs streamed:", expected, got)
    assert len(expected) == len(got) == 2, (expected, got)
    for want, have in zip(expected, got, strict=True):
        assert abs(want - have) <= 0.3, (expected, got)


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"keyterms": "Waldo"}, "prompt.invalid"),
        ({"keyterms": [1, 2]}, "prompt.invalid"),
        ({"keyterms": ["Waldo", ""]}, "prompt.invalid"),
        ({"keyterms": ["two\nlines"]}, "prompt.invalid"),
        ({"keyterms": ["x" * 51]}, "prompt.too_long"),
        ({"keyterms": [f"term{i}" for i in range(101)]}, "prompt.too_long"),
        ({"prompt": 5}, "prompt.invalid"),
        ({"prompt": "bell\x07"}, "prompt.invalid"),
        ({"prompt": "x" * 1001}, "prompt.too_long"),
        # Each within its own bound, over Whisper's 223 tokens together.
        ({"prompt": "zq " * 300, "keyterms": ["Waldo"]}, "prompt.too_long"),
        ({"words": "yes"}, "bad_request"),
    ],
)
async def test_bad_options_get_coded_errors_and_the_socket_goes_on(control, fields, code) -> None:
    client = await control.connect("bad")
    await client.send(type="session.start", id="bad", transport="ws", **fields)
    error = await client.wait_type("error", id="bad")
    assert error["code"] == code, error
    await client.send(type="session.start", id="good", transport="ws", keyterms=["Waldo"], prompt="", words=False)
    await client.wait_type("session.ready", id="good")
    client.check_schema()
    await client.close()


@pytest.mark.timeout(360)
async def test_the_servers_defaults_apply_unless_the_session_sets_its_own(engine) -> None:
    defaults = PipelineConfig(keyterms=("Waldo",), word_timestamps=True)
    async with serving(engine, pipeline=defaults, finish_timeout_s=240.0) as server:
        default, _ = await transcribe(server, "default", WALDO, stop_timeout_s=240.0)
        assert "Waldo's" in " ".join(f["text"] for f in default), default
        assert all(f["words"] for f in default)
        own, _ = await transcribe(server, "own", WALDO, keyterms=[], words=False)
        assert "waldo" not in " ".join(f["text"] for f in own).lower(), own
        assert all("words" not in f for f in own)


def test_settings_read_the_defaults_from_the_environment() -> None:
    settings = Settings.from_env(
        {"ROOMSCRIBE_KEYTERMS": " Waldo, Digium ,,", "ROOMSCRIBE_PROMPT": "A phone menu.", "ROOMSCRIBE_WORDS": "true"}
    )
    assert settings.pipeline.keyterms == ("Waldo", "Digium")
    assert settings.pipeline.prompt == "A phone menu." and settings.pipeline.word_timestamps
    assert Settings.from_env({}).pipeline == PipelineConfig()
    with pytest.raises(ConfigError, match="ROOMSCRIBE_KEYTERMS"):
        Settings.from_env({"ROOMSCRIBE_KEYTERMS": "x" * 51})
    with pytest.raises(ConfigError, match="223"):
        Settings.from_env({"ROOMSCRIBE_PROMPT": "zq " * 300})
    with pytest.raises(ConfigError, match="ROOMSCRIBE_WORDS"):
        Settings.from_env({"ROOMSCRIBE_WORDS": "maybe"})
