"""`roomscribe bench --compare`: the same latency session and sweep against `serve` and against
clusters of 1, 2, … workers, one after the other on the same machine, and what the cluster costs.

Per run: end of speech → final p50/p95 of the latency session (one real-time stream), and the
sweep's highest level served with p95 ≤ 1.5 s and nothing lost (every smaller level too). The
Redis hop's cost is each cluster run's latency minus serve's. No WER phase (the model and its
settings are the same in every topology; `roomscribe bench` measures WER).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from roomscribe.bench.runner import BenchConfig, Progress, run_bench


def compare_configs(base: BenchConfig, workers: Sequence[int]) -> list[BenchConfig]:
    """serve, then a cluster of each worker count; sizes, seed and pinning as in `base`."""
    base = dataclasses.replace(base, accuracy=False, offline=False, transports=base.transports[:1])
    serve = dataclasses.replace(base, topology="serve")
    return [serve, *(dataclasses.replace(base, topology="cluster", workers=n) for n in workers)]


def label(result: dict[str, Any]) -> str:
    topo = result.get("topology", {})
    if topo.get("topology") != "cluster":
        return "serve"
    pinned = ", pinned" if topo.get("pinned_cores") else ""
    return f"cluster, {topo['workers']} worker{'s' if topo['workers'] != 1 else ''}{pinned}"


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


def comparison_rows(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run: latency p50/p95, the difference to serve's, the sessions held."""
    base = next((r for r in results if r.get("topology", {}).get("topology") == "serve"), None)
    base_lat = next(iter(base["latency"].values()))["final_latency_s"] if base and base.get("latency") else {}
    rows = []
    for r in results:
        lat = next(iter(r["latency"].values()))["final_latency_s"] if r.get("latency") else {}
        sweep = r.get("sweep") or {}
        rows.append({
            "run": label(r),
            "final_p50_s": lat.get("p50"), "final_p95_s": lat.get("p95"),
            "vs_serve_p50_s": _diff(lat.get("p50"), base_lat.get("p50")) if r is not base else None,
            "vs_serve_p95_s": _diff(lat.get("p95"), base_lat.get("p95")) if r is not base else None,
            "max_sessions_passing": sweep.get("max_sessions_passing"),
            "levels": {lv["sessions"]: lv["final_latency_s"]["p95"] for lv in sweep.get("levels", [])},
            "loadavg_1m_before": next(iter(r["latency"].values()))["cost"]["loadavg_1m_before"] if r.get("latency") else None,
        })  # fmt: skip
    return rows


async def run_compare(base: BenchConfig, workers: Sequence[int], progress: Progress = print) -> dict[str, Any]:
    """Run every configuration in turn; the document holds each run's result and the rows."""
    results = []
    for cfg in compare_configs(base, workers):
        progress(f"=== {cfg.topology}{f' with {cfg.workers} worker(s)' if cfg.topology == 'cluster' else ''} ===")
        results.append(await run_bench(cfg, progress))
    return {"runs": results, "comparison": comparison_rows(results)}


def _ms(x: float | None, sign: bool = False) -> str:
    if x is None:
        return "—"
    return f"{x * 1000:+.0f} ms" if sign else f"{x * 1000:.0f} ms"


def render_compare(doc: dict[str, Any], limit_s: float = 1.5) -> str:
    """The comparison table: latency and the hop's cost, then the sweep's p95 per level."""
    rows = doc["comparison"]
    w = max(len(r["run"]) for r in rows)
    lines = [f"{'topology':<{w}}  final p50  final p95  p50 vs serve  p95 vs serve  sessions at p95 ≤ {limit_s} s  load before"]
    for r in rows:
        lines.append(f"{r['run']:<{w}}  {_ms(r['final_p50_s']):>9}  {_ms(r['final_p95_s']):>9}  "
                     f"{_ms(r['vs_serve_p50_s'], True):>12}  {_ms(r['vs_serve_p95_s'], True):>12}  "
                     f"{r['max_sessions_passing']!s:>24}  {r['loadavg_1m_before']}")  # fmt: skip
    levels = sorted({n for r in rows for n in r["levels"]})
    if levels:
        lines.append("")
        lines.append(f"{'sweep: final p95 by sessions':<{w}}  " + "  ".join(f"{n:>7}" for n in levels))
        for r in rows:
            lines.append(f"{r['run']:<{w}}  " + "  ".join(f"{_ms(r['levels'].get(n)):>7}" for n in levels))
    return "\n".join(lines)
