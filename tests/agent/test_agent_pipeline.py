"""End-to-end pipeline tests on the real tiny.en model and real audio, fed faster than real time."""

from __future__ import annotations

import asyncio

import jiwer
import numpy as np
import pytest
import soxr

from agent.config import PipelineConfig
from agent.events import (
    FinalTranscript,
    InterimTranscript,
    PipelineEvent,
    PipelineNotice,
    SpeechEnded,
    SpeechStarted,
)
from agent.pipeline import TranscriptionPipeline
from agent_testutil import JFK_TEXT, LIBRI_TEXT, check_event_order, feed_paced, load_wav, norm


def make(engine, **cfg):
    events: list[PipelineEvent] = []
    p = TranscriptionPipeline(engine, PipelineConfig(**cfg), events.append, participant="alice")
    return p, events


def of(events, cls):
    return [e for e in events if isinstance(e, cls)]


def final_text(events) -> str:
    return " ".join(e.text for e in of(events, FinalTranscript))


def wer(ref: str, hyp: str) -> float:
    return jiwer.wer(norm(ref), norm(hyp))


@pytest.mark.slow  # 11 s of audio fed in real time
@pytest.mark.timeout(60)
async def test_jfk_finals_accurate_with_interims_first(engine):
    p, events = make(engine)
    await feed_paced(p, load_wav("jfk.wav"), 16000, speed=1.0)  # real time: room for interims
    await p.finish()
    await p.aclose()
    check_event_order(events)
    finals = of(events, FinalTranscript)
    assert finals, events
    assert wer(JFK_TEXT, final_text(events)) <= 0.10, final_text(events)
    interims = of(events, InterimTranscript)
    assert interims, "expected interim results"
    # Interims come before their utterance's final.
    first_final_at = {f.utterance_id: events.index(f) for f in finals}
    for i in interims:
        assert events.index(i) < first_final_at.get(i.utterance_id, len(events))
    assert all(e.participant == "alice" for e in events if not isinstance(e, PipelineNotice))
    # Times are session seconds and lie within the clip.
    assert 0.0 <= finals[0].start < 1.0 and finals[-1].end <= 11.1
    st = p.stats
    assert st["finals"] == len(finals) and st["interims"] == len(interims)
    assert abs(st["audio_seconds"] - 11.0) < 0.05


@pytest.mark.timeout(60)
async def test_jfk_48k_stereo_matches_16k(engine):
    jfk = load_wav("jfk.wav").astype(np.float32) / 32768.0
    up = soxr.resample(jfk, 16000, 48000)
    stereo = np.empty(up.size * 2, dtype=np.int16)
    stereo[0::2] = np.clip(up * 32767, -32768, 32767).astype(np.int16)
    stereo[1::2] = np.clip(up * 0.8 * 32767, -32768, 32767).astype(np.int16)
    p, events = make(engine, interims=False)
    await feed_paced(p, stereo, 48000, channels=2, speed=float("inf"))
    await p.finish()
    check_event_order(events)
    assert wer(JFK_TEXT, final_text(events)) <= 0.10, final_text(events)
    assert not of(events, InterimTranscript)
    assert abs(p.stats["audio_seconds"] - 11.0) < 0.06


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["silence", "white_noise"])
async def test_no_text_for_silence_or_noise(engine, kind):
    rng = np.random.default_rng(7)
    n = 16000 * 3
    audio = np.zeros(n, np.float32) if kind == "silence" else (rng.standard_normal(n) * 0.1).astype(np.float32)
    p, events = make(engine)
    await feed_paced(p, audio, 16000, speed=float("inf"))
    await p.finish()
    check_event_order(events)
    assert not of(events, FinalTranscript) and not of(events, InterimTranscript), events
    assert p.stats["audio_seconds"] == pytest.approx(3.0, abs=0.04)


@pytest.mark.timeout(60)
async def test_two_clips_with_a_pause_give_two_utterances(engine):
    libri = load_wav("libri_61-70968-0000.wav")
    gap = np.zeros(int(16000 * 1.5), np.int16)
    audio = np.concatenate([libri, gap, libri])
    p, events = make(engine)
    await feed_paced(p, audio, 16000, speed=4.0)
    await p.finish()
    check_event_order(events)
    starts, finals = of(events, SpeechStarted), of(events, FinalTranscript)
    assert len(starts) == 2 and len(finals) == 2, events
    assert finals[0].reason == "silence"
    assert finals[0].end < 4.95 + 0.3 and finals[1].start > 4.9 + 1.2
    for f in finals:
        assert wer(LIBRI_TEXT, f.text) <= 0.15, f.text
    assert [e.utterance_id for e in starts] == [f.utterance_id for f in finals]


@pytest.mark.timeout(30)
async def test_finish_mid_utterance_gives_stop_final(engine):
    """finish() inside a word ends the open utterance with a `stop` final carrying every whole
    word before the cut; how the model reads the clipped word is not part of the contract."""
    # "fellow" spans about 1.35-1.75 s: "And so my" are the whole words before a cut at 1.6 s.
    jfk = load_wav("jfk.wav")[: int(16000 * 1.6)]
    p, events = make(engine)
    await feed_paced(p, jfk, 16000, speed=float("inf"))
    assert not of(events, FinalTranscript)
    await p.finish()
    check_event_order(events)
    finals = of(events, FinalTranscript)
    assert len(finals) == 1 and finals[0].reason == "stop"
    words = norm(finals[0].text).split()
    # The whole words, in order, then at most a guess at the clipped word (nothing from later).
    assert words[:3] == ["and", "so", "my"] and len(words) <= 4, finals[0].text
    assert isinstance(events[-1], SpeechEnded) and events[-1].utterance_id == finals[0].utterance_id
    assert events[-1].end == pytest.approx(1.6, abs=0.04)


@pytest.mark.timeout(60)
async def test_max_length_splits_and_keeps_all_words(engine):
    p, events = make(engine, max_utterance_s=4.0, silence_hangover_s=1.5, interims=False)
    await feed_paced(p, load_wav("jfk.wav"), 16000, speed=float("inf"))
    await p.finish()
    check_event_order(events)
    finals = of(events, FinalTranscript)
    assert any(f.reason == "max_length" for f in finals), finals
    assert all(f.end - f.start <= 4.0 + 1e-6 for f in finals)
    assert wer(JFK_TEXT, final_text(events)) <= 0.2, final_text(events)


@pytest.mark.timeout(60)
async def test_word_timestamps_in_session_time(engine):
    libri = load_wav("libri_61-70968-0000.wav")
    audio = np.concatenate([np.zeros(16000, np.int16), libri])  # starts 1 s into the session
    p, events = make(engine, word_timestamps=True, interims=False)
    await feed_paced(p, audio, 16000, speed=float("inf"))
    await p.finish()
    (final,) = of(events, FinalTranscript)
    assert final.words and len(final.words) >= 15
    starts = [w.start for w in final.words]
    assert starts == sorted(starts)
    assert final.words[0].start >= 0.9 and final.words[-1].end <= 6.0
    assert norm(" ".join(w.word for w in final.words)) == norm(final.text)


@pytest.mark.timeout(90)
async def test_six_pipelines_at_once_drop_interims_not_finals(engine):
    libri = load_wav("libri_61-70968-0000.wav")
    clip = np.concatenate([libri, np.zeros(int(16000 * 0.8), np.int16), libri])
    pipes = [make(engine, interim_interval_s=0.3) for _ in range(6)]
    before = engine.stats
    in_feed = await asyncio.gather(*(feed_paced(p, clip, 16000, speed=8.0) for p, _ in pipes))
    await asyncio.gather(*(p.finish() for p, _ in pipes))
    after = engine.stats  # no waiting: a job is counted as completed before its result is seen
    dropped = 0
    for p, events in pipes:
        check_event_order(events)
        finals = of(events, FinalTranscript)
        assert len(finals) == 2, events
        for f in finals:
            assert wer(LIBRI_TEXT, f.text) <= 0.15, f.text
        dropped += p.stats["interims_dropped"]
        if p.stats["interims_dropped"]:
            assert any(isinstance(e, PipelineNotice) and e.code == "interims_dropped" for e in events)
    assert dropped > 0, "six streams at 8x real time must overload one model"
    assert after["interims_dropped"] > before["interims_dropped"]
    # Every final that was queued ran (none dropped, none left behind).
    delta = {k: after[k] - before[k] for k in ("finals_submitted", "finals_completed")}
    assert delta["finals_submitted"] == delta["finals_completed"] > 0
    assert after["pending_finals"] == 0
    # feed() never waits for the model: resampling + VAD of 6 × 10.6 s of audio costs the
    # event-loop thread ~0.3 s of CPU, while the model is busy for seconds meanwhile.
    assert sum(in_feed) < 1.5
    assert after["busy_s"] - before["busy_s"] > 2 * sum(in_feed)
