"""Smoke test of `roomscribe bench`'s core: a real server subprocess, one real-time session of one
clip, a one-session sweep and WER on examples/audio. Checks the result is sane, not fast."""

from __future__ import annotations

import json
import math

import pytest

from roomscribe.bench.corpus import EXAMPLE_TRANSCRIPTS
from roomscribe.bench.report import render, target_rows
from roomscribe.bench.runner import BenchConfig, run_bench
from roomscribe.bench.wer import normalise

pytestmark = pytest.mark.timeout(240)


def finite_positive(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


async def test_bench_core_on_examples_gives_sane_numbers() -> None:
    cfg = BenchConfig.quick(
        examples_only=True, warm_up=False, latency_clips=1, sweep_levels=(1,), sweep_clips=1, accuracy_clips=None
    )
    result = await run_bench(cfg, progress=lambda _: None)
    result = json.loads(json.dumps(result))  # the document is plain JSON

    lat = result["latency"]["ws"]
    assert lat["clips"] == 1 and lat["lost"] == 0 and lat["session_errors"] == []
    # Causality, not speed: a final cannot arrive before the speech it transcribes has ended.
    assert finite_positive(lat["final_latency_s"]["p50"])
    assert lat["final_latency_s"]["p95"] >= lat["final_latency_s"]["p50"]
    # The server's speech end lands near the true end (the two timelines agree).
    assert abs(lat["speech_end_error_s"]["p50"]) < 0.5
    cost = lat["cost"]
    assert finite_positive(cost["server_cpu_s"]) and finite_positive(cost["server_cpu_s_per_audio_s"])
    assert cost["audio_s"] > 4.9  # the LibriSpeech clip plus silence
    assert result["server_memory_mb"]["peak_rss"] > 50  # a loaded model

    [level] = result["sweep"]["levels"]
    assert level["sessions"] == 1 and level["clips"] == 1 and isinstance(level["pass"], bool)

    acc = result["accuracy"]["corpus"]
    words = sum(len(normalise(t).split()) for t in EXAMPLE_TRANSCRIPTS.values())
    for key in ("numbers_as_words", "raw"):
        block = acc[key]
        assert block["streaming"]["ref_words"] == block["offline"]["ref_words"] == words
        assert 0 <= block["streaming"]["wer"] < 0.5 and 0 <= block["offline"]["wer"] < 0.5
        assert math.isclose(block["penalty_points"], 100 * (block["streaming"]["wer"] - block["offline"]["wer"]), abs_tol=0.01)
    assert acc["streaming_lost_utterances"] == 0

    result["machine"], result["config"]["mode"] = {"cpus": 2, "loadavg_start": 0}, "test"
    rows = target_rows(result)
    assert {r["verdict"] for r in rows} <= {"PASS", "FAIL", "n/a"} and len(rows) >= 5
    assert "end of speech → final" in render(result)
