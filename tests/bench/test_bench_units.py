"""Unit tests of the bench's pieces that need no model: normaliser, speech bounds, matching."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

import roomscribe.bench
from control.schema import FinalTranscript
from message_literals import hand_written_types, scan_package
from roomscribe.bench.corpus import Clip, example_corpus
from roomscribe.bench.metrics import score_session, summarise, timeline_shift
from roomscribe.bench.plan import PlannedClip, SessionPlan
from roomscribe.bench.speech import speech_bounds
from roomscribe.bench.transport import SessionRecord
from roomscribe.bench.wer import corpus_wer, normalise, number_words, ordinal_words


def test_normaliser_spells_numbers_only_when_asked() -> None:
    assert normalise("Press 1, then #!") == "press 1 then"
    assert normalise("Press 1, then 28.8 kbit") != normalise("press one then twenty eight point eight kbit")
    assert normalise("Press 1, then 28.8 kbit", numbers=True) == "press one then twenty eight point eight kbit"
    assert normalise("the 2nd of 1,500 (50%)", numbers=True) == "the second of one thousand five hundred fifty percent"
    assert number_words(1234) == "one thousand two hundred thirty four"
    assert [ordinal_words(n) for n in (1, 12, 21, 40)] == ["first", "twelfth", "twenty first", "fortieth"]


def test_corpus_wer_counts_edits_over_all_reference_words() -> None:
    score = corpus_wer(["a b c", "d e", "..."], ["a x c", "", "zzz"])
    assert (score.ref_words, score.substitutions, score.deletions, score.insertions) == (5, 1, 2, 0)
    assert abs(score.wer - 0.6) < 1e-9


def test_speech_bounds_find_the_tone_inside_silence() -> None:
    rate = 16000
    t = np.arange(int(0.5 * rate)) / rate
    tone = (8000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)
    audio = np.concatenate([np.zeros(rate // 4, np.int16), tone, np.zeros(rate // 2, np.int16)])
    onset, end = speech_bounds(audio, rate)
    assert abs(onset - 0.25) <= 0.011 and abs(end - 0.75) <= 0.011


def _record(finals: list[tuple[float, float, float]], shift: float = 0.0) -> SessionRecord:
    clip = example_corpus().clips[0]
    plan = SessionPlan("t", np.zeros(16000 * 10, np.int16), (
        PlannedClip(clip, 0.5, 1.0, 2.0), PlannedClip(clip, 3.0, 3.5, 5.0), PlannedClip(clip, 6.0, 6.5, 8.0),
    ))  # fmt: skip
    rec = SessionRecord(plan, "u", "ws", 1.0, t0=100.0, completed=True)
    for i, (arrival, start, end) in enumerate(finals):
        event = FinalTranscript(seq=i, utterance_id=f"u{i}", text="x", start=start + shift, end=end + shift, reason="silence")
        rec.events.append((arrival, event))
    return rec


def test_latency_and_loss_are_measured_from_the_true_speech_end() -> None:
    rec = _record([(102.4, 1.0, 2.0), (105.9, 3.5, 5.05)])  # the third clip gets no final
    outcomes = score_session(rec)
    assert [round(o.final_latency_s or -1, 3) for o in outcomes] == [0.4, 0.9, -1]
    assert [o.lost for o in outcomes] == [False, False, True]
    summary = summarise([rec])
    assert summary["lost"] == 1 and summary["lost_clips"] == [outcomes[2].clip_id]
    assert summary["final_latency_s"]["n"] == 2


def test_a_shifted_server_timeline_is_realigned() -> None:
    rec = _record([(102.4, 1.0, 2.0), (105.9, 3.5, 5.0), (108.7, 6.5, 8.0)], shift=2.8)
    rec.max_shift_s = 3.0
    assert abs(timeline_shift(rec) - 2.8) < 1e-9
    assert [o.lost for o in score_session(rec)] == [False, False, False]


def test_examples_have_transcripts_and_marked_bounds() -> None:
    corpus = example_corpus()
    assert len(corpus.clips) == 2 and all(isinstance(c, Clip) and c.text for c in corpus.clips)
    jfk = next(c for c in corpus.clips if c.id == "jfk")
    assert jfk.speech_s is not None and jfk.speech_s[1] < jfk.duration_s


def test_latency_from_send_discounts_a_late_client() -> None:
    rec = _record([(102.4, 1.0, 2.0)])
    rec.frame_s = 0.02
    rec.send_lateness_s = [0.0] * 50 + [0.25] * 450  # the client fell 250 ms behind after 1 s
    [first, *_] = score_session(rec)
    assert first.final_latency_s is not None and first.final_latency_from_send_s is not None
    assert abs(first.final_latency_s - 0.4) < 1e-9
    assert abs(first.final_latency_from_send_s - (0.4 - 0.02 - 0.25)) < 1e-9  # frame end at 2.02 s, sent 0.25 s late


def test_an_aligned_timeline_is_not_shifted_by_a_clip_spacing() -> None:
    rec = _record([(105.9, 3.5, 5.0), (108.7, 6.5, 8.0)])  # the first clip is lost
    assert timeline_shift(rec) == 0.0
    assert [o.lost for o in score_session(rec)] == [True, False, False]


def test_the_fairness_benchs_stand_in_model_sleeps_per_batch_and_answers_a_fixed_word() -> None:
    import time

    from agent.scheduler import AsrJob, JobKind
    from roomscribe.bench.fairness import FixedCostModel

    model = FixedCostModel(0.02)
    jobs = [AsrJob(JobKind.FINAL, f"o{k}", np.zeros(16000 * (k + 1), np.float32)) for k in range(4)]
    t0 = time.perf_counter()
    results = model.transcribe_batch(jobs)
    took = time.perf_counter() - t0
    assert took >= 0.02 * 1.45  # 1 + 0.15·3 for a batch of 4
    assert [r.text for r in results] == ["words"] * 4 and [r.audio_s for r in results] == [1.0, 2.0, 3.0, 4.0]


def test_the_bench_writes_no_message_type_by_hand() -> None:
    """The bench reads and writes messages through the wire schema's structs (issue 10)."""
    # `command` in the bench is the command line of its figures, not the `command` event
    assert scan_package(Path(roomscribe.bench.__file__).parent, other_meaning={"command"}) == {}
    # the scan bites: these are the forms the bench used before
    before = 'kind = e.get("type")\nif kind == "session.ready": pass\nn = kinds["speech.start"]\nr.of_type("transcript.final")'
    assert len(hand_written_types(ast.parse(before))) == 4


def test_the_bench_records_the_model_and_refuses_an_unknown_one(monkeypatch, capsys) -> None:
    from roomscribe.bench.cli import _main, model_info

    monkeypatch.setenv("ROOMSCRIBE_MODEL", "tiny.en")  # restored afterwards, with ROOMSCRIBE_MODEL_PATH
    monkeypatch.setenv("ROOMSCRIBE_MODEL_PATH", "")
    info = model_info()
    assert info["name"] == "tiny.en" and info["multilingual"] is False and info["size_bytes"] > 10_000_000
    assert _main(["--model", "no-such-model", "--quick"]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err
