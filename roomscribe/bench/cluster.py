"""The cluster under test (`--topology cluster`): redis-server, N `roomscribe worker`s and 2
`roomscribe control` replicas, each its own subprocess on loopback.

Like `SubprocessServer` it is a `BenchServer`: its CPU seconds and memory are those of all its
processes summed (Redis, workers, replicas; the bench client is not among them). Sessions are
spread over the replicas round-robin (`RoundRobinTransport`), so both replicas carry load and
every session's events cross Redis (replica → worker → replica).

With `pin`, worker i runs under `taskset -c K` on its own core K (the i-th core this process may
use, wrapping around), so each worker gets at most one core; the replicas and Redis are not pinned.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roomscribe.bench import procstat
from roomscribe.bench.plan import SessionPlan
from roomscribe.bench.server import (
    BENCH_ENV_DEFAULTS,
    _die_with_parent,
    _token_factory,
    spawn_logged,
    stop_process,
    wait_for_line,
)
from roomscribe.bench.transport import Endpoint, SessionRecord, Transport
from roomscribe.common.redis_server import INSTALL_HINT, RedisServer

CONTROL_REPLICAS = 2
_REPLICA_LINE = re.compile(r"control replica on (ws://\S+/v1/control)")
_WORKER_LINE = re.compile(r"roomscribe worker \S+ taking up to \d+ sessions")


def pin_cores(workers: int) -> list[int]:
    """The core each worker is pinned to: the usable cores in order, wrapping around."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    return [cores[i % len(cores)] for i in range(workers)]


@dataclass
class _Proc:
    role: str  # "redis" | "worker" | "control"
    proc: subprocess.Popen[bytes]
    log: Path | None = None


@dataclass
class ClusterServer:
    """redis-server + `workers` workers + 2 control replicas, started and stopped together."""

    workers: int = 2
    capacity: int = 16  # sessions per worker: the sweep's top level, so latency (not admission) decides
    pin: bool = False
    startup_timeout_s: float = 180.0  # workers load the model side by side
    scope: str = "cluster processes (redis + workers + control replicas, summed)"
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    endpoints: list[Endpoint] = field(default_factory=list)
    endpoint: Endpoint = field(init=False)  # the first replica's (the BenchServer protocol's)
    procs: list[_Proc] = field(default_factory=list)
    redis_url: str = ""
    cores: list[int] | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("a cluster needs at least one worker")
        if self.pin and shutil.which("taskset") is None:
            raise RuntimeError("--pin needs `taskset` (util-linux)")
        self.cores = pin_cores(self.workers) if self.pin else None
        self._redis: RedisServer | None = None
        self.endpoint = Endpoint("", _token_factory(self.secret))

    def topology(self) -> dict[str, Any]:
        """What ran, for the JSON and the report."""
        return {"topology": "cluster", "workers": self.workers, "control_replicas": CONTROL_REPLICAS,
                "worker_capacity": self.capacity, "pinned_cores": self.cores,
                "replica_urls": [e.url for e in self.endpoints], "sessions": "round-robin over the replicas"}  # fmt: skip

    def _env(self) -> dict[str, str]:
        env = {**BENCH_ENV_DEFAULTS, **os.environ}
        env.update({"ROOMSCRIBE_CONTROL_SECRET": self.secret, "ROOMSCRIBE_HOST": "127.0.0.1",
                    "ROOMSCRIBE_REDIS_URL": self.redis_url, "ROOMSCRIBE_AUDIO_TRANSPORT": "ws",
                    "PYTHONUNBUFFERED": "1"})  # fmt: skip
        return env

    async def start(self) -> None:
        """Redis, then the workers (in parallel: each loads the model), then the replicas; on any
        failure (or cancellation) everything started so far is stopped."""
        try:
            if not RedisServer.available():
                raise RuntimeError(f"--topology cluster needs `redis-server` on PATH ({INSTALL_HINT})")
            self._redis = RedisServer(preexec_fn=_die_with_parent if sys.platform == "linux" else None)
            await self._redis.astart()
            self.redis_url = self._redis.url
            assert self._redis.process is not None
            self.procs.append(_Proc("redis", self._redis.process))
            env, cli = self._env(), [sys.executable, "-m", "roomscribe.cli"]
            waits = []
            for i in range(self.workers):
                cmd = [*cli, "worker", "--redis", self.redis_url, "--capacity", str(self.capacity), "--id", f"bench-w{i}"]
                if self.cores is not None:
                    cmd = ["taskset", "-c", str(self.cores[i]), *cmd]
                # SIGKILL if the bench dies: its Redis dies too, and a draining worker would retry it.
                proc, log = spawn_logged(cmd, env, f"roomscribe-bench-worker{i}-", death_signal=signal.SIGKILL)
                self.procs.append(_Proc("worker", proc, log))
                waits.append(wait_for_line(proc, log, _WORKER_LINE, self.startup_timeout_s, f"worker {i}"))
            await asyncio.gather(*waits)
            urls = []
            for i in range(CONTROL_REPLICAS):
                proc, log = spawn_logged([*cli, "control", "--port", "0"], env, f"roomscribe-bench-control{i}-")
                self.procs.append(_Proc("control", proc, log))
                urls.append(await wait_for_line(proc, log, _REPLICA_LINE, self.startup_timeout_s, f"control replica {i}"))
            self.endpoints = [Endpoint(url, _token_factory(self.secret)) for url in urls]
            self.endpoint = self.endpoints[0]
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Replicas, then workers (SIGTERM: they drain; a second after 5 s: they stop at once), then
        Redis; idempotent."""
        for role in ("control", "worker"):
            again = 5.0 if role == "worker" else None
            await asyncio.gather(*(stop_process(p.proc, 15.0, again_after_s=again) for p in self.procs if p.role == role))
        if self._redis is not None:
            await self._redis.astop()
            self._redis.close()

    def _live(self) -> list[_Proc]:
        return [p for p in self.procs if p.proc.poll() is None]

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self._live():
            with contextlib.suppress(OSError):  # exited just now
                total += procstat.cpu_seconds(p.proc.pid)
        return total

    def memory(self) -> dict[str, int]:
        """RSS and peak RSS summed over the processes (the peaks need not have coincided)."""
        out = {"rss": 0, "peak_rss": 0}
        for p in self._live():
            try:
                m = procstat.memory_bytes(p.proc.pid)
            except OSError:
                continue
            out["rss"] += m.get("rss", 0)
            out["peak_rss"] += m.get("peak_rss", 0)
        return out

    def memory_by_role(self) -> dict[str, float]:
        """Peak RSS in MB summed per role."""
        out: dict[str, float] = {}
        for p in self._live():
            try:
                peak = procstat.memory_bytes(p.proc.pid).get("peak_rss", 0)
            except OSError:
                continue
            out[p.role] = round(out.get(p.role, 0.0) + peak / 2**20, 1)
        return out


class RoundRobinTransport:
    """Hands each session to the next of several transports (one per control replica)."""

    def __init__(self, transports: Sequence[Transport]) -> None:
        if not transports:
            raise ValueError("no transports")
        self.transports = list(transports)
        self.name = self.transports[0].name
        self._next = 0

    async def run_session(
        self, plan: SessionPlan, user: str, *, start_delay_s: float = 0.0, interim: bool = True, speed: float = 1.0
    ) -> SessionRecord:
        transport = self.transports[self._next % len(self.transports)]
        self._next += 1
        return await transport.run_session(plan, user, start_delay_s=start_delay_s, interim=interim, speed=speed)
