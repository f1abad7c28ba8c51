"""Utterance boundaries from VAD probabilities (no audio, no model)."""

import pytest

from agent.config import PipelineConfig
from agent.segmenter import Segmenter, SpeechEnd, SpeechStart
from agent.vad import WINDOW

pytestmark = pytest.mark.timeout(10)


def run(probs, cfg=None, finish=True):
    seg = Segmenter(cfg or PipelineConfig())
    out = []
    for i, p in enumerate(probs):
        out += [(i, b) for b in seg.push(p)]
    if finish:
        out += [(len(probs), b) for b in seg.finish()]
    return out


def windows(seconds: float) -> int:
    return round(seconds * 16000 / WINDOW)


def test_start_confirmed_after_min_speech_and_end_after_hangover():
    cfg = PipelineConfig(min_speech_s=0.1, silence_hangover_s=0.3)
    probs = [0.0] * 10 + [0.9] * 30 + [0.0] * 20
    out = run(probs, cfg)
    assert [type(b) for _, b in out] == [SpeechStart, SpeechEnd]
    (i0, start), (i1, end) = out
    assert start.sample == 10 * WINDOW
    assert i0 == 10 + 4 - 1  # confirmed on the 4th speech window (4 × 32 ms ≥ 100 ms)
    assert end.reason == "silence" and end.sample == 40 * WINDOW
    assert i1 == 40 + 10 - 1  # 10 windows = 320 ms ≥ 300 ms hangover
    assert end.audio_end == (i1 + 1) * WINDOW


def test_short_blip_is_discarded():
    out = run([0.0] * 5 + [0.9] * 2 + [0.0] * 30)
    assert out == []


def test_hysteresis_keeps_speech_between_thresholds():
    cfg = PipelineConfig(vad_threshold=0.5)  # neg threshold 0.35
    probs = [0.9] * 10 + [0.4] * 30 + [0.9] * 5 + [0.0] * 20
    out = run(probs, cfg)
    ends = [b for _, b in out if isinstance(b, SpeechEnd)]
    assert len(ends) == 1 and ends[0].sample == 45 * WINDOW


def test_short_pause_does_not_split():
    probs = [0.9] * 20 + [0.0] * 5 + [0.9] * 20 + [0.0] * 20
    out = run(probs)
    assert [type(b) for _, b in out] == [SpeechStart, SpeechEnd]


def test_max_length_cuts_at_quietest_point_and_continues():
    cfg = PipelineConfig(max_utterance_s=3.2, max_cut_lookback_s=1.0)
    n_max = windows(3.2)
    probs = [0.95] * (n_max + 40)
    dip = n_max - 10
    probs[dip] = 0.6  # quietest point of the lookback, still above threshold
    out = run(probs, cfg)
    kinds = [(type(b).__name__, getattr(b, "reason", None)) for _, b in out]
    assert kinds == [("SpeechStart", None), ("SpeechEnd", "max_length"), ("SpeechStart", None),
                     ("SpeechEnd", "stop")]
    cut = out[1][1]
    assert cut.sample == dip * WINDOW and cut.audio_end == cut.sample
    assert out[2][1].sample == cut.sample and out[2][1].continuation
    assert out[3][1].sample == len(probs) * WINDOW


def test_finish_closes_open_speech_and_ignores_pending():
    out = run([0.9] * 20)
    assert [type(b) for _, b in out] == [SpeechStart, SpeechEnd]
    assert out[-1][1].reason == "stop" and out[-1][1].sample == 20 * WINDOW
    assert run([0.9] * 2) == []  # never confirmed
