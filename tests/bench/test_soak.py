"""`roomscribe bench --soak`: a few seconds of it on a real in-process server (the session's model),
and its pure parts (plan, server settings, report). Checks counts agree, not speed."""

from __future__ import annotations

import json

import pytest

from agent.asr import AsrEngine
from roomscribe.bench.cli import build_parser
from roomscribe.bench.corpus import example_corpus
from roomscribe.bench.server import apply_overrides, unknown_settings
from roomscribe.bench.soak import SoakConfig, problems, render, run_soak, server_overrides, soak_plan, steady_slope

pytestmark = pytest.mark.timeout(180)


@pytest.mark.slow  # streams ~13 s of speech through the model in real time
async def test_a_short_soak_counts_every_utterance_and_keeps_the_idle_sockets(engine: AsrEngine) -> None:
    cfg = SoakConfig(minutes=0.1, sessions=2, idle_sockets=3, server="inprocess", stagger_s=0.2, sample_s=1.0, warm_up=False)
    result = json.loads(json.dumps(await run_soak(cfg, engine=engine, progress=lambda _: None)))  # plain JSON

    assert problems(result) == [], render(result, "test")
    counts = result["counts"]
    assert counts["clips_sent"] == result["clips"] == 2  # libri (session 0), jfk (session 1)
    assert result["lost"] == 0 and result["final_latency_s"]["n"] == 2
    assert counts["utterances"] == counts["speech_ends"] >= counts["finals"] >= 2
    assert [row["clips_sent"] for row in counts["per_session"]] == [1, 1]
    assert result["idle_sockets"] == {"opened": 3, "answered_ping_at_end": 3, "closed_early": []}
    rss = result["rss_mb"]
    assert rss["start"] > 50 and rss["end"] > 50 and rss["peak"] >= rss["end"] and len(rss["samples"]) >= 2
    text = render(result, "roomscribe bench --soak --minutes 0.1")
    assert text.startswith("command: roomscribe bench --soak --minutes 0.1") and "errors: none" in text


def test_a_soak_plan_repeats_the_samples_to_fill_its_length() -> None:
    clips = example_corpus().clips
    plan = soak_plan("p", clips, 120.0)
    assert 100.0 < plan.duration_s <= 120.0
    ids = [c.clip.id for c in plan.clips]
    assert ids[:3] == [clips[0].id, clips[1].id, clips[0].id] and len(ids) >= 6
    assert [c.clip.id for c in soak_plan("q", clips, 1.0, first=1).clips] == [clips[1].id]  # at least one clip


def test_the_soak_sets_its_caps_explicitly_and_skips_unknown_settings() -> None:
    cfg = SoakConfig(minutes=10, sessions=8, idle_sockets=50)
    over = server_overrides(cfg)
    assert over["audio_transport"] == "ws" and over["max_sessions"] >= 8 and over["max_sockets"] >= 58
    assert over["start_timeout_s"] > cfg.duration_s  # idle sockets are not closed for never starting
    from control.config import Settings

    settings = Settings()
    assert apply_overrides(settings, {"audio_transport": "ws", "no_such_setting": 1}) == ["no_such_setting"]
    assert settings.audio_transport == "ws"
    assert unknown_settings({"grace_period_s": 1.0, "nope": 2}) == ["nope"]


def test_steady_slope_fits_only_the_later_samples() -> None:
    samples = [(0.0, 100.0), (30.0, 180.0), (60.0, 200.0), (120.0, 201.0), (180.0, 202.0)]
    assert steady_slope(samples, 60.0) == 1.0
    assert steady_slope(samples[:3], 60.0) is None


def test_the_soak_flags_parse() -> None:
    args = build_parser().parse_args(["--soak", "--minutes", "0.5", "--sessions", "3", "--idle-sockets", "7", "--json", "x.json"])
    assert (args.soak, args.minutes, args.sessions, args.idle_sockets, args.json) == (True, 0.5, 3, 7, "x.json")
    defaults = build_parser().parse_args(["--soak"])
    assert (defaults.minutes, defaults.sessions, defaults.idle_sockets, defaults.server) == (10.0, 8, 50, "subprocess")
