"""The bench's phases: warm-up, latency per transport, concurrency sweep, accuracy, offline, cost."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from roomscribe.bench import procstat
from roomscribe.bench.cluster import ClusterServer, RoundRobinTransport
from roomscribe.bench.corpus import Clip, Corpus, example_corpus, resolve_corpus
from roomscribe.bench.longform import LongformConfig, LongformSession, build_longform, describe
from roomscribe.bench.metrics import clip_texts, final_text, score_session, summarise
from roomscribe.bench.plan import SessionPlan, build_plan, pick_clips
from roomscribe.bench.server import BenchServer, InProcessServer, SubprocessServer
from roomscribe.bench.transport import SessionRecord, Transport, make_transport
from roomscribe.bench.wer import corpus_wer, normalise

Progress = Callable[[str], None]


@dataclass
class BenchConfig:
    """What to run. `quick()` fits in about two minutes; the defaults are the full bench."""

    mode: str = "full"
    transports: tuple[str, ...] = ("ws",)  # latency runs on each; sweep and accuracy on the first
    server: str = "subprocess"  # "subprocess" | "inprocess" (topology "serve" only)
    topology: str = "serve"  # "serve": one `roomscribe serve`; "cluster": redis + workers + 2 control replicas
    workers: int = 2  # cluster: worker processes
    pin: bool = False  # cluster: each worker on its own core (taskset -c K)
    worker_capacity: int | None = None  # cluster: sessions per worker (None: the sweep's top level)
    accuracy: bool = True  # the WER phase (streaming, and offline unless `offline` is off)
    corpus_dir: Path | None = None
    build_corpus: bool = True
    examples_only: bool = False  # use examples/audio as the corpus (tests; no download)
    warm_up: bool = True
    latency_clips: int = 60
    sweep_levels: tuple[int, ...] = (1, 2, 4, 8, 16)
    sweep_clips: int = 8  # clips per session at each level
    accuracy_clips: int | None = None  # None: the whole corpus
    accuracy_speed: float = 8.0  # finals do not depend on pace (segmentation counts samples)
    accuracy_session_clips: int = 50
    include_examples: bool = True
    longform: bool = True  # WER on the long-form set too (roomscribe.bench.longform)
    longform_only: bool = False  # only the long-form WER phase (no latency, sweep or prompt WER)
    longform_sessions: int | None = None  # None: the whole set
    offline: bool = True
    gap_s: float = 1.0
    stagger_s: float = 2.0  # sweep sessions start at random offsets in [0, stagger_s)
    seed: int = 1
    max_p95_final_s: float = 1.5

    @classmethod
    def quick(cls, **overrides: Any) -> BenchConfig:
        base: dict[str, Any] = {"mode": "quick", "latency_clips": 10, "sweep_clips": 2, "accuracy_clips": 20, "stagger_s": 1.5,
                                "longform_sessions": 2}  # fmt: skip
        base.update(overrides)
        return cls(**base)


TOPOLOGIES = ("serve", "cluster")


def make_server(cfg: BenchConfig) -> BenchServer:
    if cfg.topology == "cluster":
        capacity = cfg.worker_capacity or max((*cfg.sweep_levels, 1))
        return ClusterServer(workers=cfg.workers, capacity=capacity, pin=cfg.pin)
    if cfg.topology != "serve":
        raise ValueError(f"unknown topology {cfg.topology!r}; choose from {', '.join(TOPOLOGIES)}")
    if cfg.server == "subprocess":
        return SubprocessServer()
    if cfg.server == "inprocess":
        return InProcessServer()
    raise ValueError(f"unknown server mode {cfg.server!r}")


class Meter:
    """CPU seconds of the server (and of the bench process) and wall time over one phase."""

    def __init__(self, server: BenchServer) -> None:
        self.server = server
        self.cpu0 = server.cpu_seconds()
        self.client0 = procstat.cpu_seconds()
        self.wall0 = time.monotonic()
        self.load0 = os.getloadavg()[0]

    def read(self, audio_s: float) -> dict[str, Any]:
        wall = time.monotonic() - self.wall0
        cpu = self.server.cpu_seconds() - self.cpu0
        cores = os.cpu_count() or 1
        return {
            "wall_s": round(wall, 2),
            "audio_s": round(audio_s, 2),
            "server_cpu_s": round(cpu, 2),
            "server_cpu_s_per_audio_s": round(cpu / audio_s, 4) if audio_s else None,
            "server_cores_used": round(cpu / wall, 2) if wall else None,
            "server_cpu_share": round(cpu / wall / cores, 3) if wall else None,
            "bench_client_cpu_s": round(procstat.cpu_seconds() - self.client0, 2),
            "loadavg_1m_before": round(self.load0, 2),
            "memory_mb": {k: round(v / 2**20, 1) for k, v in self.server.memory().items()},
        }


async def run_sessions(
    transport: Transport, plans: Sequence[SessionPlan], prefix: str, *, delays: Sequence[float] | None = None,
    interim: bool = True, speed: float = 1.0,
) -> list[SessionRecord]:  # fmt: skip
    """Stream the plans concurrently, one user per session."""
    delays = delays or [0.0] * len(plans)
    return list(await asyncio.gather(*(
        transport.run_session(p, f"{prefix}-{i}", start_delay_s=d, interim=interim, speed=speed)
        for i, (p, d) in enumerate(zip(plans, delays, strict=False))
    )))  # fmt: skip


def diagnose(summary: dict[str, Any], cost: dict[str, Any], limit_s: float) -> tuple[bool, str]:
    """Pass/fail of one sweep level, and the evidence for why it failed."""
    p95 = summary["final_latency_s"]["p95"]
    problems, causes = [], []
    if summary["lost"]:
        problems.append(f"{summary['lost']} of {summary['clips']} utterances got no final")
    if p95 is None or p95 > limit_s:
        problems.append(f"p95 final {p95} s > {limit_s} s")
    if summary["incomplete_sessions"]:
        problems.append(f"{len(summary['incomplete_sessions'])} session(s) did not end cleanly")
    share = cost.get("server_cpu_share") or 0
    if share >= 0.85:
        causes.append(f"server CPU saturated ({cost['server_cores_used']} of {os.cpu_count()} cores busy)")
    notices = summary["status_notices"]
    if notices.get("asr_backlog"):
        causes.append(f"finals queued behind the model ({notices['asr_backlog']} asr_backlog notices)")
    if notices.get("interims_dropped"):
        causes.append(f"interims dropped under load ({notices['interims_dropped']} notices)")
    lateness = summary["client_send_lateness_s"]["p99"] or 0
    if lateness > 0.05:
        causes.append(f"the bench client fell behind real time (p99 send lateness {lateness * 1000:.0f} ms)")
    if cost.get("loadavg_1m_before", 0) > (os.cpu_count() or 1):
        causes.append(f"machine oversubscribed (load {cost['loadavg_1m_before']} on {os.cpu_count()} cores before the level; "
                      f"the server got {cost['server_cores_used']} cores)")  # fmt: skip
    ok = not problems
    text = "ok" if ok else "; ".join(problems) + (" — " + "; ".join(causes) if causes else "")
    return ok, text


def make_transports(names: Sequence[str], server: BenchServer) -> list[Transport]:
    """One transport per name; on a cluster each spreads its sessions over the replicas round-robin."""
    if isinstance(server, ClusterServer):
        return [RoundRobinTransport([make_transport(n, ep) for ep in server.endpoints]) for n in names]
    return [make_transport(n, server.endpoint) for n in names]


def topology_info(cfg: BenchConfig, server: BenchServer) -> dict[str, Any]:
    """The processes measured (the JSON's `topology`)."""
    if isinstance(server, ClusterServer):
        return server.topology()
    return {"topology": "serve", "server": cfg.server}


async def _warm_up(transport: Transport, corpus: Corpus, seed: int) -> None:
    plan = build_plan("warm-up", pick_clips(corpus.clips, 1, seed=seed + 999), lead_s=0.2, tail_s=1.0)
    await transport.run_session(plan, "bench-warmup", speed=2.0)


async def latency_phase(transport: Transport, server: BenchServer, clips: Sequence[Clip], gap_s: float) -> dict[str, Any]:
    """One real-time session of `clips`: the latency headline and the single-stream cost."""
    plan = build_plan(f"latency-{transport.name}", clips, gap_s=gap_s)
    meter = Meter(server)
    records = await run_sessions(transport, [plan], f"bench-latency-{transport.name}")
    out = summarise(records)
    out["cost"] = meter.read(plan.duration_s)
    out["speech_s"] = round(plan.speech_s, 1)
    out["per_clip"] = [asdict(o) for o in score_session(records[0])]
    out["notes"] = records[0].notes
    return out


async def sweep_phase(
    transport: Transport, server: BenchServer, corpus: Corpus, cfg: BenchConfig, progress: Progress
) -> dict[str, Any]:
    """N concurrent real-time sessions for each N in `cfg.sweep_levels`."""
    levels = []
    for n in cfg.sweep_levels:
        clips = pick_clips(corpus.clips, n * cfg.sweep_clips, seed=cfg.seed + 100 * n)
        plans = [
            build_plan(f"sweep{n}-{i}", clips[i * cfg.sweep_clips : (i + 1) * cfg.sweep_clips], gap_s=cfg.gap_s)
            for i in range(n)
        ]
        rng = random.Random(cfg.seed + n)
        delays = [0.0] + [rng.uniform(0, cfg.stagger_s) for _ in range(n - 1)]
        meter = Meter(server)
        records = await run_sessions(transport, plans, f"bench-n{n}", delays=delays)
        summary = summarise(records)
        cost = meter.read(sum(p.duration_s for p in plans))
        ok, why = diagnose(summary, cost, cfg.max_p95_final_s)
        lat = summary["final_latency_s"]
        progress(f"  {n:2d} sessions: final p50 {lat['p50']} s, p95 {lat['p95']} s, lost {summary['lost']}/{summary['clips']}, "
                 f"server {cost['server_cores_used']} cores — {why}")  # fmt: skip
        levels.append({"sessions": n, "pass": ok, "why": why, **summary, "cost": cost})
        await asyncio.sleep(1.0)
    first_fail = next((lv for lv in levels if not lv["pass"]), None)
    held = [lv["sessions"] for lv in levels if first_fail is None or lv["sessions"] < first_fail["sessions"]]
    return {
        "levels": levels,
        # The largest N such that N and every smaller level passed.
        "max_sessions_passing": max(held, default=0),
        "levels_passing": [lv["sessions"] for lv in levels if lv["pass"]],
        "breaks_at": first_fail["sessions"] if first_fail else None,
        "break_reason": first_fail["why"] if first_fail else None,
    }


async def stream_for_accuracy(transport: Transport, clips: Sequence[Clip], cfg: BenchConfig, name: str) -> dict[str, Any]:
    """Stream `clips` (interims off, `accuracy_speed`× real time) and collect the finals' text."""
    chunk = cfg.accuracy_session_clips
    refs, hyps, per_clip, lost, records = [], [], [], 0, []
    for i in range(0, len(clips), chunk):
        part = clips[i : i + chunk]
        plan = build_plan(f"{name}-{i // chunk}", part, gap_s=cfg.gap_s)
        [record] = await run_sessions(
            transport, [plan], f"bench-acc-{name}-{i // chunk}", interim=False, speed=cfg.accuracy_speed
        )
        records.append(record)
        refs.append(" ".join(c.text for c in part))
        hyps.append(final_text(record))
        per_clip.extend(clip_texts(record))
        lost += sum(o.lost for o in score_session(record))
    return {"refs": refs, "hyps": hyps, "per_clip": per_clip, "lost": lost, "incomplete": sum(not r.completed for r in records)}


async def accuracy_phase(
    main: Transport, corpus: Corpus, cfg: BenchConfig, progress: Progress
) -> dict[str, tuple[list[Clip], dict[str, Any]]]:
    """Stream the accuracy clips (and examples/audio) for WER."""
    acc_clips = (
        list(corpus.clips)
        if cfg.accuracy_clips is None
        else pick_clips(corpus.clips, cfg.accuracy_clips, seed=cfg.seed + 7, min_s=0, max_s=1e9)
    )
    acc_clips = list(dict.fromkeys(acc_clips))  # no repeats (examples fallback)
    progress(f"accuracy: streaming {len(acc_clips)} clips at {cfg.accuracy_speed}× real time…")
    streamed = {"corpus": (acc_clips, await stream_for_accuracy(main, acc_clips, cfg, "corpus"))}
    if cfg.include_examples and corpus.name != "examples":
        ex = list(example_corpus().clips)
        streamed["examples"] = (ex, await stream_for_accuracy(main, ex, cfg, "examples"))
    return streamed


async def stream_longform(transport: Transport, sessions: Sequence[LongformSession], cfg: BenchConfig) -> dict[str, Any]:
    """Stream the long-form sessions one after another (interims off, `accuracy_speed`× real time)."""
    refs, hyps, per_clip, lost, incomplete, errors = [], [], [], 0, 0, []
    for k, s in enumerate(sessions):
        [record] = await run_sessions(transport, [s.plan], f"bench-acc-long-{k}", interim=False, speed=cfg.accuracy_speed)
        refs.append(s.text)
        hyps.append(final_text(record))
        per_clip.extend(clip_texts(record))
        lost += sum(o.lost for o in score_session(record))
        incomplete += not record.completed
        errors += [f"{s.plan.name}: {e}" for e in (record.error, *record.notes) if e]
    return {"refs": refs, "hyps": hyps, "per_clip": per_clip, "lost": lost, "incomplete": incomplete, "errors": errors}


def longform_block(stream: dict[str, Any], sessions: Sequence[LongformSession], offline: list[str] | None) -> dict[str, Any]:
    """Streaming vs offline WER on the long-form set (offline: one call per session, VAD on)."""
    minutes = sum(s.plan.duration_s for s in sessions) / 60
    out: dict[str, Any] = {"clips": sum(len(s.utterances) for s in sessions), "sessions": len(sessions),
                           "minutes": round(minutes, 2), "streaming_lost_utterances": stream["lost"],
                           "incomplete_sessions": stream["incomplete"], "session_errors": stream.get("errors", [])}  # fmt: skip
    for key, numbers in (("numbers_as_words", True), ("raw", False)):
        s = corpus_wer(stream["refs"], stream["hyps"], numbers=numbers)
        block: dict[str, Any] = {"streaming": s.as_dict()}
        if offline is not None:
            o = corpus_wer(stream["refs"], offline, numbers=numbers)
            block["offline"] = o.as_dict()
            block["penalty_points"] = round((s.wer - o.wer) * 100, 2)
        out[key] = block
    return out


def wer_block(stream: dict[str, Any], clips: Sequence[Clip], offline: list[str] | None) -> dict[str, Any]:
    """Streaming vs offline WER (numbers spelled out, and raw), and the streaming penalty."""
    out: dict[str, Any] = {"clips": len(clips), "minutes": round(sum(c.duration_s for c in clips) / 60, 2),
                           "streaming_lost_utterances": stream["lost"], "incomplete_sessions": stream["incomplete"]}  # fmt: skip
    for key, numbers in (("numbers_as_words", True), ("raw", False)):
        s = corpus_wer(stream["refs"], stream["hyps"], numbers=numbers)
        block: dict[str, Any] = {"streaming": s.as_dict()}
        if offline is not None:
            o = corpus_wer([c.text for c in clips], offline, numbers=numbers)
            block["offline"] = o.as_dict()
            block["penalty_points"] = round((s.wer - o.wer) * 100, 2)
        out[key] = block
    if offline is not None:  # clips where streaming and offline disagree (numbers spelled out)
        out["differences"] = [
            {"id": c.id, "ref": c.text, "streaming": st, "offline": of}
            for c, st, of in zip(clips, stream["per_clip"], offline, strict=False)
            if normalise(st, numbers=True) != normalise(of, numbers=True)
        ]
    return out


async def run_bench(cfg: BenchConfig, progress: Progress = print) -> dict[str, Any]:
    """Run every phase and return the result (the JSON document)."""
    from control.config import Settings

    started = time.time()
    result: dict[str, Any] = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}}
    corpus = example_corpus() if cfg.examples_only else resolve_corpus(cfg.corpus_dir, build=cfg.build_corpus)
    if corpus.fallback_reason:
        progress(f"!!! WARNING: the Asterisk corpus is unavailable ({corpus.fallback_reason}).\n"
                 "!!! FALLING BACK to examples/audio (2 clips): figures are NOT representative.")  # fmt: skip
    progress(f"corpus: {corpus.description}, {corpus.duration_s / 60:.1f} min")
    settings = Settings.from_env()
    result["corpus"] = {"name": corpus.name, "description": corpus.description, "clips": len(corpus.clips),
                        "minutes": round(corpus.duration_s / 60, 2), "fallback_reason": corpus.fallback_reason}  # fmt: skip
    result["server_settings"] = {"asr": asdict(settings.asr), "pipeline": asdict(settings.pipeline)}
    server = make_server(cfg)
    pinned = " (pinned)" if cfg.pin else ""
    progress(f"starting the server ({cfg.server})…" if cfg.topology == "serve" else
             f"starting the cluster: redis-server, {cfg.workers} worker(s){pinned}, 2 control replicas…")  # fmt: skip
    await server.start()
    result["server_scope"] = server.scope
    result["topology"] = topology_info(cfg, server)
    streamed: dict[str, tuple[list[Clip], dict[str, Any]]] = {}
    longform: tuple[list[LongformSession], dict[str, Any]] | None = None
    try:
        transports = make_transports(cfg.transports, server)
        main = transports[0]
        if cfg.warm_up:
            await _warm_up(main, corpus, cfg.seed)
        result["latency"] = {}
        latency_clips = pick_clips(corpus.clips, cfg.latency_clips, seed=cfg.seed)
        for t in [] if cfg.longform_only else transports:
            progress(f"latency over {t.name}: 1 real-time session of {len(latency_clips)} clips…")
            lat = await latency_phase(t, server, latency_clips, cfg.gap_s)
            result["latency"][t.name] = lat
            progress(f"  final p50 {lat['final_latency_s']['p50']} s, p95 {lat['final_latency_s']['p95']} s; "
                     f"first interim p50 {lat['first_interim_latency_s']['p50']} s; lost {lat['lost']}")  # fmt: skip
        if cfg.sweep_levels and not cfg.longform_only:
            levels = ", ".join(map(str, cfg.sweep_levels))
            progress(f"concurrency sweep over {main.name}: {levels} sessions × {cfg.sweep_clips} clips…")
            result["sweep"] = await sweep_phase(main, server, corpus, cfg, progress)
        if cfg.accuracy and not cfg.longform_only:
            streamed = await accuracy_phase(main, corpus, cfg, progress)
        if cfg.accuracy and (cfg.longform or cfg.longform_only):
            sessions = build_longform(corpus.clips, LongformConfig(sessions=cfg.longform_sessions))
            if sessions:
                progress(f"accuracy: streaming the {describe(sessions)} at {cfg.accuracy_speed}× real time…")
                longform = (sessions, await stream_longform(main, sessions, cfg))
            else:
                progress("accuracy: no long-form set (the corpus is too small for a 50-s session)")
        result["server_memory_mb"] = {k: round(v / 2**20, 1) for k, v in server.memory().items()}
        if isinstance(server, ClusterServer):
            result["topology"]["peak_rss_mb_by_role"] = server.memory_by_role()
    finally:
        await server.stop()
    result["accuracy"] = {}
    for name, (clips, stream) in streamed.items():
        offline = None
        if cfg.offline:
            progress(f"offline reference: {len(clips)} {name} clips…")
            offline = await asyncio.to_thread(_offline, clips, settings)
        result["accuracy"][name] = wer_block(stream, clips, offline)
    if longform is not None:
        sessions, stream = longform
        texts = None
        if cfg.offline:
            progress(f"offline reference: {len(sessions)} long-form sessions, one call each…")
            texts = await asyncio.to_thread(_offline_sessions, sessions, settings)
        result["accuracy"]["longform"] = longform_block(stream, sessions, texts)
    result["started_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
    result["duration_s"] = round(time.time() - started, 1)
    return result


def _offline_sessions(sessions: Sequence[LongformSession], settings: Any) -> list[str]:
    from roomscribe.bench.offline import transcribe_sessions_offline

    return transcribe_sessions_offline([s.plan.audio for s in sessions], settings.asr)


def _offline(clips: Sequence[Clip], settings: Any) -> list[str]:
    from roomscribe.bench.offline import transcribe_offline

    return transcribe_offline(clips, settings.asr, settings.pipeline)
