"""Targets, verdicts and the printed table."""

from __future__ import annotations

from typing import Any

# Issue 6's targets. The LiveKit path may be up to LIVEKIT_EXTRA_S slower than the ws path.
FINAL_P50_S = 0.350
FINAL_P95_S = 0.600
INTERIM_P50_S = 0.600
MIN_SESSIONS = 8
MAX_WER_PENALTY_POINTS = 0.5
LIVEKIT_EXTRA_S = 0.100
REFERENCE = ("Reference (WhisperLive, same machine and model): finals 4–5 s after the utterance ends "
             "(median); loses a third of utterances at 8 streams.")  # fmt: skip


def _ms(x: float | None) -> str:
    return "—" if x is None else f"{x * 1000:.0f} ms"


def _verdict(value: float | None, limit: float, *, at_least: bool = False) -> str:
    if value is None:
        return "n/a"
    return "PASS" if (value >= limit if at_least else value <= limit) else "FAIL"


def target_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target: figure, measured (raw and shown), target, verdict."""
    rows = []
    for name, lat in result.get("latency", {}).items():
        extra = LIVEKIT_EXTRA_S if name == "livekit" else 0.0
        fl, il = lat["final_latency_s"], lat["first_interim_latency_s"]
        for label, value, limit in (
            (f"{name}: end of speech → final, p50", fl["p50"], FINAL_P50_S + extra),
            (f"{name}: end of speech → final, p95", fl["p95"], FINAL_P95_S + extra),
            (f"{name}: speech onset → first interim, p50", il["p50"], INTERIM_P50_S + extra),
        ):
            rows.append({"figure": label, "value": value, "shown": _ms(value), "target": f"≤ {limit * 1000:.0f} ms",
                         "verdict": _verdict(value, limit)})  # fmt: skip
    sweep = result.get("sweep")
    if sweep:
        n = sweep["max_sessions_passing"]
        shown = str(n)
        others = [x for x in sweep.get("levels_passing", []) if x > n]
        if others:
            shown += f" (also passed: {', '.join(map(str, others))})"
        rows.append({"figure": "concurrent sessions (p95 final ≤ 1.5 s, none lost)", "value": n, "shown": shown,
                     "target": f"≥ {MIN_SESSIONS}", "verdict": _verdict(n, MIN_SESSIONS, at_least=True)})  # fmt: skip
    for name in ("corpus", "longform"):
        acc = result.get("accuracy", {}).get(name)
        if not (acc and "penalty_points" in acc["numbers_as_words"]):
            continue
        block = acc["numbers_as_words"]
        p = block["penalty_points"]
        shown = f"{block['streaming']['wer'] * 100:.2f}% vs {block['offline']['wer'] * 100:.2f}% ({p:+.2f} pts)"
        rows.append({"figure": f"streaming WER vs offline ({name})", "value": p, "shown": shown,
                     "target": f"≤ +{MAX_WER_PENALTY_POINTS} pts", "verdict": _verdict(p, MAX_WER_PENALTY_POINTS)})  # fmt: skip
    return rows


def topology_line(topo: dict[str, Any] | None) -> str:
    """What was measured: one `roomscribe serve`, or the cluster's processes."""
    if not topo or topo.get("topology") != "cluster":
        return "topology: serve (one `roomscribe serve` process)"
    cores = topo.get("pinned_cores")
    pinned = f", pinned to cores {', '.join(map(str, cores))}" if cores else ", not pinned"
    return (f"topology: cluster: redis-server + {topo['workers']} worker(s) (capacity {topo['worker_capacity']} each{pinned}) "
            f"+ {topo['control_replicas']} control replicas, sessions round-robin over the replicas")  # fmt: skip


def render(result: dict[str, Any]) -> str:
    """The human-readable report."""
    lines = []
    corpus = result["corpus"]
    if corpus.get("fallback_reason"):
        lines.append(f"!!! FALLBACK CORPUS (examples/audio): {corpus['fallback_reason']}")
    machine = result.get("machine", {})
    lines.append(f"roomscribe bench ({result['config']['mode']}), {result.get('started_at', '')}, "
                 f"{machine.get('cpus', '?')} CPUs, load {machine.get('loadavg_start', '?')}, "
                 f"corpus: {corpus['description']}")  # fmt: skip
    if model := result.get("model"):
        lines.append(f"model: {model['name']} ({'multilingual' if model['multilingual'] else 'English only'}), "
                     f"{model['compute_type']}, beam {model['beam_size']}, language {model['language']}")  # fmt: skip
    lines.append(topology_line(result.get("topology")))
    rows = target_rows(result)
    w = max(len(r["figure"]) for r in rows) if rows else 10
    m = max(len(r["shown"]) for r in rows) if rows else 10
    lines.append(f"{'figure':<{w}}  {'measured':<{m}}  {'target':<12}  verdict")
    lines.append("-" * (w + m + 25))
    for r in rows:
        lines.append(f"{r['figure']:<{w}}  {r['shown']:<{m}}  {r['target']:<12}  {r['verdict']}")
    for name, lat in result.get("latency", {}).items():
        c = lat["cost"]
        late = lat["client_send_lateness_s"]["p99"] or 0
        if late > 0.05:
            fs = lat["final_latency_from_send_s"]
            lines.append(f"!!! {name}: the bench client sent audio late (p99 {late * 1000:.0f} ms); measured from the actual "
                         f"send, end of speech → final is p50 {_ms(fs['p50'])}, p95 {_ms(fs['p95'])}")  # fmt: skip
        lines.append(f"{name}: {lat['clips']} utterances, lost {lat['lost']}, interim coverage {lat['interim_coverage']}, "
                     f"server CPU {c['server_cpu_s_per_audio_s']} s per audio s ({c['server_cores_used']} cores), "
                     f"peak RSS {c['memory_mb'].get('peak_rss')} MB")  # fmt: skip
    sweep = result.get("sweep")
    if sweep:
        lines.append("")
        lines.append("sessions  final p50  final p95  lost    server cores  verdict")
        for lv in sweep["levels"]:
            fl = lv["final_latency_s"]
            lines.append(f"{lv['sessions']:>8}  {_ms(fl['p50']):>9}  {_ms(fl['p95']):>9}  {lv['lost']:>2}/{lv['clips']:<3}  "
                         f"{lv['cost']['server_cores_used']:>12}  {lv['why']}")  # fmt: skip
    for name, acc in result.get("accuracy", {}).items():
        for key in ("numbers_as_words", "raw"):
            b = acc[key]
            off = f", offline {b['offline']['wer'] * 100:.2f}%" if "offline" in b else ""
            unit = f"{acc['sessions']} sessions, {acc['clips']} utterances" if "sessions" in acc else f"{acc['clips']} clips"
            lines.append(f"WER {name} ({unit}, {acc['minutes']} min, {key.replace('_', ' ')}): "
                         f"streaming {b['streaming']['wer'] * 100:.2f}%{off}")  # fmt: skip
        if acc.get("differences"):
            lines.append(f"  {len(acc['differences'])} {name} clip(s) where streaming ≠ offline "
                         f"(see JSON accuracy.{name}.differences)")
    if "server_memory_mb" in result:
        lines.append(f"server memory ({result.get('server_scope')}): {result['server_memory_mb']}")
    lines.append(REFERENCE)
    return "\n".join(lines)
