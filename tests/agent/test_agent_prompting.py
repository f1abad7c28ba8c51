"""Keyterms and prompt on both backends (real model, real speech), and their bounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.asr import AsrEngine
from agent.config import AsrConfig, PipelineConfig
from agent.prompting import (
    MAX_PROMPT_TOKENS,
    DecoderPrompt,
    PromptError,
    check_prompt,
    decoder_prompt,
    pipeline_prompt,
    session_config,
    token_counter,
)
from agent.scheduler import AsrJob, JobKind
from agent.textguard import GuardConfig, clean_text
from agent_testutil import load_wav

WALDO_WAV = Path(__file__).resolve().parents[2] / "examples" / "audio" / "asterisk_waldo.wav"
KEYTERM = DecoderPrompt(keyterms=("Waldo",))


def _waldo() -> np.ndarray:
    import wave

    with wave.open(str(WALDO_WAV), "rb") as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return np.concatenate([np.zeros(4800, np.float32), pcm.astype(np.float32) / 32768])


def _job(audio: np.ndarray, prompt: DecoderPrompt | None = None) -> AsrJob:
    return AsrJob(kind=JobKind.FINAL, owner="t", audio=audio, prompt=prompt)


def _text(result) -> str:
    return clean_text(result.segments, GuardConfig())


@pytest.mark.timeout(60)
def test_adaptive_backend_batches_biased_and_plain_jobs_each_with_its_own_prompt(engine):
    backend = engine.backend
    waldo = _waldo()
    libri = np.concatenate([np.zeros(4800, np.float32), load_wav("libri_61-70968-0000.wav").astype(np.float32) / 32768])
    alone_plain = _text(backend.transcribe_batch([_job(waldo)])[0])
    alone_biased = _text(backend.transcribe_batch([_job(waldo, KEYTERM)])[0])
    assert "waldo" not in alone_plain.lower(), alone_plain
    assert "Waldo's" in alone_biased, alone_biased
    together = backend.transcribe_batch([_job(waldo, KEYTERM), _job(waldo), _job(libri), _job(waldo, KEYTERM)])
    libri_alone = _text(backend.transcribe_batch([_job(libri)])[0])
    assert [_text(r) for r in together] == [alone_biased, alone_plain, libri_alone, alone_biased]
    # The plain jobs ran as one batch with the default prompt, the biased ones as another.
    assert together[1].extra["batch"] == 2 and together[0].extra["batch"] == 2


@pytest.mark.slow  # the full 30-s window: ~10 s on 2 cores
@pytest.mark.timeout(90)
def test_full_backend_takes_the_same_keyterms():
    eng = AsrEngine(AsrConfig(encoder_window="full"))
    eng.start_sync()
    try:
        waldo = _waldo()
        plain, biased = eng.backend.transcribe_batch([_job(waldo), _job(waldo, KEYTERM)])
        assert "waldo" not in _text(plain).lower(), _text(plain)
        assert "Waldo's" in _text(biased), _text(biased)
    finally:
        eng.close_sync()


def test_prompt_tokens_are_faster_whispers(engine):
    backend = engine.backend
    model, tokenizer = backend.loaded_model(), backend._tokenizer
    prompt = DecoderPrompt(("Waldo", "Digium"), "  Welcome to Asterisk. ")
    tokens = decoder_prompt(model, tokenizer, prompt, without_timestamps=True)
    expected = model.get_prompt(
        tokenizer, tokenizer.encode(" Welcome to Asterisk."), without_timestamps=True, hotwords="Waldo, Digium"
    )
    assert tokens == expected
    assert tokens[0] == tokenizer.sot_prev and tokens[-1] == tokenizer.no_timestamps
    assert decoder_prompt(model, tokenizer, None, without_timestamps=True) == backend._prompt
    assert decoder_prompt(model, tokenizer, DecoderPrompt(), without_timestamps=True) == backend._prompt


def test_bounds():
    count = token_counter(None)
    assert count(" Waldo") >= 1
    check_prompt(DecoderPrompt(tuple(f"t{i}" for i in range(100)), ""), lambda text: 1)  # 100 terms are fine
    check_prompt(DecoderPrompt(("Waldo", "x" * 50), "y" * 200), count)
    for bad, code in [
        (DecoderPrompt(("",)), "invalid"),
        (DecoderPrompt(("  ",)), "invalid"),
        (DecoderPrompt(("a\nb",)), "invalid"),
        (DecoderPrompt(("x" * 51,)), "too_long"),
        (DecoderPrompt(tuple(f"t{i}" for i in range(101))), "too_long"),
        (DecoderPrompt((), "x" * 1001), "too_long"),
        (DecoderPrompt((), "\x00"), "invalid"),
        (DecoderPrompt(("Waldo",), "zq " * 300), "too_long"),
    ]:
        with pytest.raises(PromptError) as caught:
            check_prompt(bad, count)
        assert caught.value.code == code, bad
    check_prompt(DecoderPrompt((), "line one\nline two\tand a tab"), count)


def test_without_a_tokenizer_bytes_bound_the_tokens(tmp_path):
    count = token_counter(str(tmp_path))  # no tokenizer.json there
    assert count("héllo") == 6
    with pytest.raises(PromptError, match=str(MAX_PROMPT_TOKENS)):
        check_prompt(DecoderPrompt((), "x" * 300), count)


def test_session_config_overrides_only_what_the_session_set():
    base = PipelineConfig(keyterms=("Server",), prompt="server prompt", word_timestamps=False)
    assert session_config(base) is base
    s = session_config(base, keyterms=[" Waldo "], words=True)
    assert s.keyterms == ("Waldo",) and s.prompt == "server prompt" and s.word_timestamps
    none = session_config(base, keyterms=[], prompt="")
    assert pipeline_prompt(none) is None
    assert pipeline_prompt(base) == DecoderPrompt(("Server",), "server prompt")
