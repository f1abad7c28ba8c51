"""Pipeline behaviour with a fake model: speculation, ordering under a slow model, teardown."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from agent.asr import AsrEngine, AsrResult, AsrSegment
from agent.config import AsrConfig, PipelineConfig
from agent.events import FinalTranscript, PipelineEvent, PipelineNotice, SpeechEnded, SpeechStarted
from agent.pipeline import TranscriptionPipeline
from agent_testutil import check_event_order, feed_keeping_up, feed_paced, load_wav

pytestmark = pytest.mark.timeout(30)


class FakeBackend:
    """Says how much audio it heard; optional delay per call."""

    def __init__(self, delay: float = 0.0, speculative_logprob: float = -0.1) -> None:
        self.delay = delay
        self.speculative_logprob = speculative_logprob
        self.calls: list[tuple[str, float]] = []

    def load(self) -> None:
        pass

    def transcribe_batch(self, jobs):
        out = []
        for j in jobs:
            time.sleep(self.delay)
            secs = len(j.audio) / 16000
            self.calls.append((j.kind.value, secs))
            lp = self.speculative_logprob if j.kind.value == "speculative" else -0.1
            seg = AsrSegment(f"heard {secs:.2f} seconds", 0.0, secs, lp, 0.01, 1.0, 0.0)
            out.append(AsrResult(segments=(seg,), audio_s=secs, infer_s=self.delay))
        return out


async def _engine(delay: float = 0.0, **kw) -> tuple[AsrEngine, FakeBackend]:
    backend = FakeBackend(delay, **kw)
    eng = AsrEngine(AsrConfig(), backend=backend)
    await eng.start()
    return eng, backend


def _speech_pause_speech(pause_s: float) -> np.ndarray:
    libri = load_wav("libri_61-70968-0000.wav")
    return np.concatenate([libri[: 16000 * 2], np.zeros(int(16000 * pause_s), np.int16),
                           libri[16000 * 2 :], np.zeros(16000, np.int16)])


async def test_speculative_final_is_used_when_silence_lasts():
    eng, backend = await _engine()
    events: list[PipelineEvent] = []
    p = TranscriptionPipeline(eng, PipelineConfig(interims=False), events.append)
    await feed_keeping_up(p, eng, _speech_pause_speech(0.0), 16000)
    await p.finish()
    st = eng.stats
    await eng.close()
    check_event_order(events)
    assert len([e for e in events if isinstance(e, FinalTranscript)]) == 1
    kinds = [k for k, _ in backend.calls]
    assert p.stats["speculative_used"] == 1 and kinds.count("final") == 0, backend.calls
    assert st["finals_submitted"] == 0  # the trusted speculative result left no real final queued


async def test_unsure_speculative_final_is_redone_with_all_audio():
    eng, backend = await _engine(speculative_logprob=-0.9)
    events: list[PipelineEvent] = []
    p = TranscriptionPipeline(eng, PipelineConfig(interims=False), events.append)
    await feed_keeping_up(p, eng, _speech_pause_speech(0.0), 16000)
    await p.finish()
    st = eng.stats
    await eng.close()
    check_event_order(events)
    (final,) = [e for e in events if isinstance(e, FinalTranscript)]
    assert p.stats["speculative_redone"] == 1
    assert st["finals_submitted"] == st["finals_completed"] == 1  # the redo ran, and only it
    final_at = next(i for i, (k, _) in enumerate(backend.calls) if k == "final")
    spec_heard = backend.calls[final_at - 1][1]  # the speculative decode the final redid
    final_heard = backend.calls[final_at][1]
    # The redo heard the whole utterance and the hangover's real silence: as long as the
    # speculative decode, whose missing silence was filled in (one VAD window of rounding).
    assert final_heard == pytest.approx(spec_heard, abs=0.033)
    assert final.text == f"heard {final_heard:.2f} seconds"


async def test_the_speculative_final_hears_as_much_silence_as_the_real_one():
    """Whisper's text depends on how much silence follows the last word (tiny.en turned "And so my
    fellow Americans" into "And so am i fell americans" when it heard 0.1 s of it instead of the
    hangover's 0.3 s). Which decode wins depends on timing, so both must hear the same length."""
    heard: dict[bool, list[float]] = {}
    for speculative in (True, False):
        eng, backend = await _engine()
        p = TranscriptionPipeline(eng, PipelineConfig(interims=False, speculative_finals=speculative), lambda e: None)
        await feed_keeping_up(p, eng, _speech_pause_speech(1.0), 16000)
        await p.finish()
        await eng.close()
        heard[speculative] = [secs for _, secs in backend.calls]
        assert {kind for kind, _ in backend.calls} == ({"speculative"} if speculative else {"final"})
    assert heard[True] == pytest.approx(heard[False], abs=0.033)


async def test_speculative_final_is_abandoned_when_speech_resumes():
    eng, _backend = await _engine(delay=0.05)
    events: list[PipelineEvent] = []
    # A 0.2 s pause is shorter than the 0.3 s hangover: one utterance, one wasted speculation.
    p = TranscriptionPipeline(eng, PipelineConfig(interims=False), events.append)
    await feed_paced(p, _speech_pause_speech(0.2), 16000, speed=2.0)
    await p.finish()
    await eng.close()
    check_event_order(events)
    finals = [e for e in events if isinstance(e, FinalTranscript)]
    assert len(finals) == 1
    assert p.stats["speculative_wasted"] >= 1
    # The final heard the whole utterance, not the speculative prefix.
    heard = float(finals[0].text.split()[1])
    assert heard > 4.5


async def test_slow_model_keeps_utterances_in_order_and_loses_no_final():
    eng, _backend = await _engine(delay=0.3)
    events: list[PipelineEvent] = []
    libri = load_wav("libri_61-70968-0000.wav")
    gap = np.zeros(int(16000 * 0.6), np.int16)
    audio = np.concatenate([libri, gap, libri, gap, libri, gap])
    p = TranscriptionPipeline(eng, PipelineConfig(), events.append)
    await feed_paced(p, audio, 16000, speed=float("inf"))  # ~17 s of audio almost at once
    assert p.stats["pending_finals"] >= 1  # the model is behind ...
    await p.finish()  # ... and finish() waits for every final
    await eng.close()
    check_event_order(events)
    assert len([e for e in events if isinstance(e, FinalTranscript)]) == 3
    assert p.stats["finals"] == 3 and p.stats["pending_finals"] == 0


async def test_aclose_closes_started_utterances():
    eng, _ = await _engine(delay=0.5)
    events: list[PipelineEvent] = []
    p = TranscriptionPipeline(eng, PipelineConfig(), events.append)
    await feed_paced(p, load_wav("libri_61-70968-0000.wav")[: 16000 * 2], 16000, speed=float("inf"))
    assert any(isinstance(e, SpeechStarted) for e in events)
    await p.aclose()
    await eng.close()
    check_event_order(events)
    assert isinstance(events[-1], SpeechEnded)
    with pytest.raises(RuntimeError):
        p.feed(np.zeros(320, np.int16), 16000)


async def test_closed_engine_gives_notice_not_hang():
    eng, _ = await _engine()
    await eng.close()
    events: list[PipelineEvent] = []
    p = TranscriptionPipeline(eng, PipelineConfig(), events.append)
    await feed_paced(p, load_wav("libri_61-70968-0000.wav"), 16000, speed=float("inf"))
    await asyncio.wait_for(p.finish(), 5)
    check_event_order(events)
    assert any(isinstance(e, PipelineNotice) and e.code == "asr_error" for e in events)
    assert not any(isinstance(e, FinalTranscript) for e in events)
    assert p.stats["asr_errors"] >= 1


async def test_audio_buffer_stays_bounded_on_a_long_stream():
    eng, _ = await _engine()
    events: list[PipelineEvent] = []
    cfg = PipelineConfig(interims=False, max_utterance_s=5.0)
    p = TranscriptionPipeline(eng, cfg, events.append)
    libri = load_wav("libri_61-70968-0000.wav")
    # 60 s: speech back to back (forces max_length cuts) then silence.
    audio = np.concatenate([libri] * 8 + [np.zeros(16000 * 20, np.int16)])
    longest = 0
    for i in range(0, audio.size, 16000):
        await feed_paced(p, audio[i : i + 16000], 16000, speed=float("inf"))
        longest = max(longest, len(p._audio))
    await p.finish()
    await eng.close()
    check_event_order(events)
    assert longest <= 16000 * (cfg.max_utterance_s + cfg.pre_roll_s + 1.0)
    assert len(p._audio) <= 16000 * 1.0  # idle: only the pre-roll is kept
    assert any(e.reason == "max_length" for e in events if isinstance(e, FinalTranscript))


async def test_a_pipeline_resuming_another_ones_stream_emits_what_it_would_have():
    """resume_point(): a fresh pipeline given it (times from `start_s`, ids from `first_utterance`)
    and the audio after it carries the stream on (how a worker replaces a dead one)."""
    eng, _ = await _engine()
    libri = load_wav("libri_61-70968-0000.wav")
    audio = np.concatenate([libri, np.zeros(int(16000 * 1.5), np.int16), libri, np.zeros(16000, np.int16)])
    cfg = PipelineConfig(interims=False, speculative_finals=False)  # the fake's text: the audio it heard

    whole: list[PipelineEvent] = []
    reference = TranscriptionPipeline(eng, cfg, whole.append)
    await feed_paced(reference, audio, 16000, speed=float("inf"))
    await reference.finish()

    first: list[PipelineEvent] = []
    first_ended = asyncio.Event()

    def on_first(event: PipelineEvent) -> None:
        first.append(event)
        if isinstance(event, SpeechEnded):
            first_ended.set()

    a = TranscriptionPipeline(eng, cfg, on_first)
    await feed_paced(a, audio[: 16000 * 2], 16000, speed=float("inf"))
    assert a.resume_point() is None  # mid-utterance
    cut = (len(libri) + 16000 * 3 // 4) // 512 * 512  # in the pause, on a VAD window
    await feed_paced(a, audio[16000 * 2 : cut], 16000, speed=float("inf"))
    await asyncio.wait_for(first_ended.wait(), 10)  # the first utterance's final is out
    point = a.resume_point()
    assert point is not None and (point.audio_s, point.next_utterance) == (cut / 16000, 2)
    await a.aclose()

    rest: list[PipelineEvent] = []
    b = TranscriptionPipeline(eng, cfg, rest.append, start_s=point.audio_s, first_utterance=point.next_utterance)
    await feed_paced(b, audio[cut:], 16000, speed=float("inf"))
    await b.finish()
    await eng.close()
    check_event_order(first + rest)
    def kinds(events: list[PipelineEvent]) -> list[tuple[str, str | None]]:
        return [(type(e).__name__, getattr(e, "utterance_id", None)) for e in events]

    assert kinds(first + rest) == kinds(whole)
    got_finals = [e for e in rest if isinstance(e, FinalTranscript)]
    want_finals = [e for e in whole if isinstance(e, FinalTranscript)][1:]
    assert [(f.utterance_id, f.reason) for f in got_finals] == [("u2", "silence")]
    assert [(f.utterance_id, f.reason) for f in want_finals] == [("u2", "silence")]
    assert got_finals[0].start == pytest.approx(want_finals[0].start, abs=0.04)
    assert got_finals[0].end == pytest.approx(want_finals[0].end, abs=0.04)
