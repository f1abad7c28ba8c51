"""The long-form set's builder: deterministic, exact references, gaps and pauses as configured,
real (non-zero) silence. Synthetic prompts: tones inside a low noise floor."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from agent.events import FinalTranscript
from roomscribe.bench.corpus import Clip
from roomscribe.bench.longform import LongformConfig, build_longform
from roomscribe.bench.longform_eval import split_breakdown
from roomscribe.bench.speech import frame_levels_db

pytestmark = pytest.mark.timeout(60)
RATE = 16000


def _write(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(samples.astype("<i2").tobytes())


@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> list[Clip]:
    """80 prompts: 0.3 s noise, a tone of 1–4 s, 0.35 s noise (the floor about −70 dBFS)."""
    d = tmp_path_factory.mktemp("prompts")
    rng = np.random.default_rng(0)
    clips = []
    for k in range(80):
        tone_s = 1.0 + (k % 7) * 0.5
        t = np.arange(int(tone_s * RATE)) / RATE
        tone = 8000 * np.sin(2 * np.pi * (300 + 10 * k) * t)
        audio = np.concatenate([np.zeros(int(0.3 * RATE)), tone, np.zeros(int(0.35 * RATE))])
        audio = audio + rng.normal(0, 10, audio.size)
        path = d / f"p{k}.wav"
        _write(path, audio)
        clips.append(Clip(f"p{k}", path, f"prompt number {k}.", audio.size / RATE))
    return clips


def test_the_same_seed_gives_the_same_sessions_and_another_seed_other_ones(prompts: list[Clip]) -> None:
    a, b = build_longform(prompts), build_longform(list(reversed(prompts)))
    assert [s.text for s in a] == [s.text for s in b]
    assert all(np.array_equal(x.plan.audio, y.plan.audio) for x, y in zip(a, b, strict=True))
    assert [s.text for s in build_longform(prompts, LongformConfig(seed=2))] != [s.text for s in a]


def test_references_are_the_joined_transcripts_each_prompt_once(prompts: list[Clip]) -> None:
    by_id = {c.id: c for c in prompts}
    sessions = build_longform(prompts)
    assert len(sessions) >= 2
    used = [cid for s in sessions for u in s.utterances for cid in u.clip_ids]
    assert len(used) == len(set(used))
    for s in sessions:
        for u, planned in zip(s.utterances, s.plan.clips, strict=True):
            assert u.text == " ".join(by_id[c].text for c in u.clip_ids) == planned.clip.text
        assert s.text == " ".join(c.clip.text for c in s.plan.clips)


def test_gaps_pauses_and_lengths_are_as_configured(prompts: list[Clip]) -> None:
    cfg = LongformConfig()
    for s in build_longform(prompts, cfg):
        assert cfg.session_s[0] <= s.plan.duration_s <= cfg.session_s[1]
        for u in s.utterances:
            assert u.end_s - u.onset_s <= cfg.utterance_s[1]
            assert len(u.gaps_s) == len(u.clip_ids) - 1 == len(u.spans_s) - 1
            for gap, (_, end), (onset, _) in zip(u.gaps_s, u.spans_s, u.spans_s[1:], strict=False):
                assert cfg.gap_s[0] - 1e-3 <= gap <= cfg.gap_s[1] + 1e-3
                assert gap == pytest.approx(onset - end, abs=1e-3)
        for prev, nxt in zip(s.utterances, s.utterances[1:], strict=False):
            assert nxt.onset_s - prev.end_s == pytest.approx(cfg.pause_s, abs=1e-3)
        assert sum(u.end_s - u.onset_s for u in s.utterances[:-1]) >= cfg.utterance_s[0] * (len(s.utterances) - 1)


def test_speech_is_where_the_spans_say_and_the_silence_is_the_real_noise_floor(prompts: list[Clip]) -> None:
    s = build_longform(prompts)[0]
    levels = frame_levels_db(s.plan.audio)  # 10 ms frames
    loud = levels > -40
    spans = [span for u in s.utterances for span in u.spans_s]
    inside = np.zeros_like(loud)
    for on, end in spans:
        inside[int(on * 100) + 1 : int(end * 100) - 1] = True
        assert abs(on - round(on, 2)) < 0.011  # placed on the tone's onset (10 ms frames)
    assert loud[inside].all()
    outside = np.ones_like(loud)
    for on, end in spans:
        outside[int(on * 100) - 1 : int(end * 100) + 2] = False
    assert not loud[outside].any()
    quiet = s.plan.audio[: int(0.4 * RATE)]  # the lead: taken from the prompts' own silence
    assert np.count_nonzero(quiet) > quiet.size // 2 and np.abs(quiet).max() < 100


def test_split_breakdown_tells_cuts_at_gaps_from_cuts_inside_a_prompt(prompts: list[Clip]) -> None:
    s = build_longform(prompts)[0]
    u = s.utterances[0]
    (a0, a1), (b0, _b1) = u.spans_s[0], u.spans_s[1]
    finals = [
        FinalTranscript("u1", "x", a0, a1, "silence"),  # ends at the first gap
        FinalTranscript("u2", "y", b0, b0 + 0.5, "max_length"),  # ends inside the second prompt
        FinalTranscript("u3", "z", b0 + 0.5, u.end_s, "silence"),
    ]
    out = split_breakdown(s, finals)
    assert out["cut_silence_at_gap"] == 1 and out["cut_max_length_mid_prompt"] == 1
    assert out["finals_3"] == 1 and out["utterances"] == len(s.utterances)


def test_the_report_shows_the_long_form_wer_against_offline(prompts: list[Clip]) -> None:
    from roomscribe.bench.report import render, target_rows
    from roomscribe.bench.runner import longform_block

    sessions = build_longform(prompts)[:2]
    refs = [s.text for s in sessions]
    stream = {"refs": refs, "hyps": [r.replace("prompt", "prompts") for r in refs], "per_clip": [], "lost": 0, "incomplete": 0}
    block = longform_block(stream, sessions, offline=refs)
    assert block["sessions"] == 2 and block["clips"] == sum(len(s.utterances) for s in sessions)
    assert block["numbers_as_words"]["offline"]["wer"] == 0
    assert block["raw"]["penalty_points"] == pytest.approx(100 / 3, abs=0.01)  # one word in three
    result = {"corpus": {"description": "test"}, "config": {"mode": "test"}, "accuracy": {"longform": block}}
    [row] = target_rows(result)
    assert row["figure"] == "streaming WER vs offline (longform)" and row["verdict"] == "FAIL"
    assert "WER longform (2 sessions" in render(result)
