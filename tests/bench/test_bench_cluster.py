"""`roomscribe bench --topology cluster` against real processes: redis-server, a `roomscribe worker`
and 2 `roomscribe control` replicas; and what the comparison reports. Checks the figures are
there and sane, not fast."""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil

import numpy as np
import pytest

from roomscribe.bench.cluster import ClusterServer, RoundRobinTransport, pin_cores
from roomscribe.bench.compare import compare_configs, comparison_rows, render_compare
from roomscribe.bench.plan import SessionPlan
from roomscribe.bench.report import render
from roomscribe.bench.runner import BenchConfig, run_bench
from roomscribe.bench.transport import SessionRecord

needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None and not os.environ.get("CI"),
    reason="redis-server is not installed (apt-get install redis-server; .ci/run installs it)",
)


@pytest.mark.slow  # starts 4 processes (2 load the model) and streams ~10 s of speech in real time
@pytest.mark.timeout(300)
@needs_redis
async def test_cluster_bench_reports_latency_over_both_replicas() -> None:
    cfg = BenchConfig.quick(
        examples_only=True, warm_up=False, latency_clips=1, sweep_levels=(2,), sweep_clips=1,
        accuracy=False, offline=False, topology="cluster", workers=1,
    )  # fmt: skip
    result = json.loads(json.dumps(await run_bench(cfg, progress=lambda _: None)))

    topo = result["topology"]
    assert topo["topology"] == "cluster" and topo["workers"] == 1 and topo["control_replicas"] == 2
    assert len(set(topo["replica_urls"])) == 2 and topo["worker_capacity"] == 2
    assert set(topo["peak_rss_mb_by_role"]) == {"redis", "worker", "control"}
    lat = result["latency"]["ws"]
    assert lat["clips"] == 1 and lat["lost"] == 0 and lat["session_errors"] == [], lat
    p50 = lat["final_latency_s"]["p50"]
    assert isinstance(p50, float) and math.isfinite(p50) and p50 > 0  # a final after the speech ended
    assert lat["cost"]["server_cpu_s"] > 0
    [level] = result["sweep"]["levels"]
    assert level["sessions"] == 2 and level["session_errors"] == [] and level["lost"] == 0, level
    assert result["accuracy"] == {}

    result["machine"] = {"cpus": 2, "loadavg_start": 0}
    text = render(result)
    assert "topology: cluster" in text and "end of speech → final" in text


@pytest.mark.timeout(120)
@needs_redis
async def test_a_cluster_cancelled_while_starting_leaves_no_process() -> None:
    cluster = ClusterServer(workers=1, capacity=1)
    start = asyncio.create_task(cluster.start())
    while not any(p.role == "worker" for p in cluster.procs):  # redis is up, the worker loading
        assert not start.done(), start
        await asyncio.sleep(0.05)
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start
    assert cluster.procs and all(p.proc.poll() is not None for p in cluster.procs)


async def test_round_robin_spreads_sessions_over_the_replicas() -> None:
    used: list[str] = []

    class Fake:
        name = "ws"

        def __init__(self, tag: str) -> None:
            self.tag = tag

        async def run_session(self, plan: SessionPlan, user: str, **_: object) -> SessionRecord:
            used.append(self.tag)
            return SessionRecord(plan, user, "ws", 1.0)

    rr = RoundRobinTransport([Fake("a"), Fake("b")])
    plan = SessionPlan("p", np.zeros(0, dtype=np.int16), ())
    for i in range(5):
        await rr.run_session(plan, f"u{i}")
    assert used == ["a", "b", "a", "b", "a"] and rr.name == "ws"


def test_pinned_workers_get_a_core_each_wrapping_around() -> None:
    cores = sorted(os.sched_getaffinity(0))
    assert pin_cores(len(cores)) == cores
    assert pin_cores(len(cores) + 1)[-1] == cores[0]


def _run(topology: str, workers: int, p50: float, p95: float, passing: int) -> dict[str, object]:
    topo = {"topology": topology, "workers": workers, "pinned_cores": [0] * workers if topology == "cluster" else None}
    lat = {"final_latency_s": {"p50": p50, "p95": p95}, "cost": {"loadavg_1m_before": 1.0}}
    levels = [{"sessions": 1, "final_latency_s": {"p95": p95}}, {"sessions": 2, "final_latency_s": {"p95": 2.0}}]
    return {"topology": topo, "latency": {"ws": lat}, "sweep": {"levels": levels, "max_sessions_passing": passing}}


def test_the_comparison_reports_the_hop_and_the_sessions_held() -> None:
    configs = compare_configs(BenchConfig.quick(pin=True), [1, 2])
    assert [(c.topology, c.workers if c.topology == "cluster" else None) for c in configs] == [
        ("serve", None), ("cluster", 1), ("cluster", 2)]  # fmt: skip
    assert not any(c.accuracy or c.offline for c in configs) and all(c.pin for c in configs)

    rows = comparison_rows([_run("serve", 0, 0.4, 0.5, 2), _run("cluster", 1, 0.45, 0.6, 1), _run("cluster", 2, 0.46, 0.62, 2)])
    assert [r["run"] for r in rows] == ["serve", "cluster, 1 worker, pinned", "cluster, 2 workers, pinned"]
    assert rows[0]["vs_serve_p50_s"] is None
    assert rows[1]["vs_serve_p50_s"] == pytest.approx(0.05) and rows[2]["vs_serve_p95_s"] == pytest.approx(0.12)
    assert [r["max_sessions_passing"] for r in rows] == [2, 1, 2]
    text = render_compare({"comparison": rows})
    assert "+50 ms" in text and "cluster, 2 workers, pinned" in text


@pytest.mark.parametrize(
    "argv",
    [
        ["--topology", "cluster", "--transport", "livekit"],
        ["--topology", "cluster", "--server", "inprocess"],
        ["--topology", "cluster", "--workers", "0"],
        ["--compare", "1,x"],
    ],
)
def test_cluster_options_that_cannot_run_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from roomscribe.bench.cli import main

    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("error: ")
