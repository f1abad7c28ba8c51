"""Both backends: the default adaptive-window CTranslate2 backend (short encoder input, batches)
and faster-whisper's full 30-s window."""

from __future__ import annotations

import jiwer
import numpy as np
import pytest

from agent.asr import AsrEngine
from agent.config import AsrConfig, PipelineConfig
from agent.ct2backend import ShortWindowBackend
from agent.events import FinalTranscript, PipelineEvent
from agent.pipeline import TranscriptionPipeline
from agent.scheduler import AsrJob, JobKind
from agent.textguard import GuardConfig, clean_text
from agent_testutil import JFK_TEXT, LIBRI_TEXT, check_event_order, feed_paced, load_wav, norm


@pytest.fixture(scope="module")
def full_engine():
    eng = AsrEngine(AsrConfig(encoder_window="full"))
    eng.start_sync()
    yield eng
    eng.close_sync()


@pytest.fixture
def fast_engine(engine):
    assert isinstance(engine.backend, ShortWindowBackend), "the default backend is adaptive"
    return engine


def _job(audio: np.ndarray, kind=JobKind.FINAL) -> AsrJob:
    lead = np.zeros(4800, np.float32)
    return AsrJob(kind=kind, owner="t", audio=np.concatenate([lead, audio]))


@pytest.mark.slow  # JFK through the full 30 s encoder window: ~20 s on 2 cores
@pytest.mark.timeout(60)
async def test_pipeline_on_full_window_backend(full_engine):
    events: list[PipelineEvent] = []
    p = TranscriptionPipeline(full_engine, PipelineConfig(), events.append)
    await feed_paced(p, load_wav("jfk.wav"), 16000, speed=2.0)
    await p.finish()
    check_event_order(events)
    text = " ".join(e.text for e in events if isinstance(e, FinalTranscript))
    assert jiwer.wer(norm(JFK_TEXT), norm(text)) <= 0.10, text


@pytest.mark.timeout(60)
def test_batch_equals_one_by_one_and_short_window(fast_engine):
    backend = fast_engine.backend
    libri = load_wav("libri_61-70968-0000.wav").astype(np.float32) / 32768
    jfk = load_wav("jfk.wav").astype(np.float32) / 32768
    clips = [libri, jfk[: 16000 * 2], libri[: 16000 * 3]]
    alone = [backend.transcribe_batch([_job(c)])[0] for c in clips]
    together = backend.transcribe_batch([_job(c) for c in clips])
    g = GuardConfig()
    assert jiwer.wer(norm(LIBRI_TEXT), norm(clean_text(alone[0].segments, g))) <= 0.15
    assert alone[0].extra["encoder_frames"] < 3000  # really shorter than Whisper's 30 s
    assert together[0].extra["batch"] == 3
    for a, t in zip(alone, together, strict=True):
        # Padding to the batch's longest window may change a token; the texts stay close.
        assert jiwer.wer(norm(clean_text(a.segments, g)), norm(clean_text(t.segments, g))) <= 0.2


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["silence", "white_noise"])
def test_adaptive_backend_no_text_for_noise(fast_engine, kind):
    rng = np.random.default_rng(3)
    n = 16000 * 3
    audio = np.zeros(n, np.float32) if kind == "silence" else (rng.standard_normal(n) * 0.1).astype(np.float32)
    res = fast_engine.backend.transcribe_batch([_job(audio)])[0]
    assert clean_text(res.segments, GuardConfig()) == ""
