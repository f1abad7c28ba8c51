"""`roomscribe demo --cluster`: a whole cluster on loopback, and the demo client against it.

A throwaway redis-server (no persistence, a temporary directory), two `roomscribe worker` and two
`roomscribe control` processes — the same commands a deployment runs (docs/deploy.md) — then the
demo client streams the sample over the ws transport to the first control replica and prints the
transcript. Everything it started is stopped when it ends, on an error or on Ctrl-C (control
replicas first, then the workers, then Redis); on Linux the children also get SIGTERM if this
process is killed outright.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from roomscribe.common.child_process import parent_death_signal
from roomscribe.common.redis_server import INSTALL_HINT, RedisServer

WORKERS = 2
REPLICAS = 2
#: How long the children get to be ready (each worker loads the model first).
START_TIMEOUT_S = 180.0
#: How long a child gets to exit after SIGTERM before it is killed.
STOP_TIMEOUT_S = 20.0
#: Lines of a child's output kept to show when it fails.
TAIL_LINES = 40

_REPLICA_READY = re.compile(r"^roomscribe control replica on (ws://\S+/v1/control)")
_WORKER_READY = re.compile(r"^roomscribe worker \S+ taking up to \d+ sessions")
#: The CLI's log format: "HH:MM:SS LEVEL logger: message".
_LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def ready_line(role: str, line: str) -> str | None:
    """The line a child prints once it serves: the replica's control URL, or the worker's line."""
    if role == "control":
        match = _REPLICA_READY.match(line)
        return match.group(1) if match else None
    return line if _WORKER_READY.match(line) else None


def worth_showing(line: str, verbose: bool) -> bool:
    """Which lines of a child's output the demo passes on: warnings, errors and anything that is
    not a log line (a traceback, an `error:` message); everything with -v."""
    if verbose:
        return True
    match = _LOG_LINE.match(line)
    return match is None or match.group(1) not in ("DEBUG", "INFO")


class ChildFailed(RuntimeError):
    """A child exited, or did not get ready, when it should not have."""


@dataclass
class Child:
    """One `roomscribe worker` or `roomscribe control` process and what it printed."""

    name: str
    role: str
    process: asyncio.subprocess.Process
    ready: asyncio.Future[str]
    #: Its last lines that were not shown as they came (its info log).
    hidden: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))

    def failure(self, what: str) -> ChildFailed:
        output = "".join(f"\n  {line}" for line in self.hidden)
        return ChildFailed(f"{self.name} {what}" + (f"; its last log lines (besides any shown above):{output}" if output else ""))


class LocalCluster:
    """Redis, workers and control replicas on loopback, as child processes of this one."""

    def __init__(self, *, secret: str, env_file: str, verbose: bool = False) -> None:
        self.secret = secret
        self.env_file = env_file
        self.verbose = verbose
        self._preexec = parent_death_signal()
        self.redis = RedisServer(preexec_fn=self._preexec)
        self.children: list[Child] = []
        self._pumps: list[asyncio.Task[None]] = []
        self.replica_urls: list[str] = []

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            ROOMSCRIBE_CONTROL_SECRET=self.secret,
            ROOMSCRIBE_REDIS_URL=self.redis.url,
            ROOMSCRIBE_HOST="127.0.0.1",
            ROOMSCRIBE_AUDIO_TRANSPORT="ws",  # a cluster runs ws sessions only, for now
            ROOMSCRIBE_DEV_MODE="false",
            ROOMSCRIBE_SERVE_WEB="false",
            LIVEKIT_URL="", LIVEKIT_API_KEY="", LIVEKIT_API_SECRET="",
            PYTHONUNBUFFERED="1",
        )  # fmt: skip
        return env

    async def start(self, workers: int = WORKERS, replicas: int = REPLICAS, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start Redis (here, in this thread), then every child at once; return when all serve."""
        self.redis.start()
        env = self._env()
        for i in range(1, workers + 1):
            await self._spawn(f"worker-{i}", "worker", ["--id", f"demo-worker-{i}"], env)
        for i in range(1, replicas + 1):
            await self._spawn(f"control-{i}", "control", ["--port", "0"], env)
        try:
            async with asyncio.timeout(timeout_s):
                lines = await asyncio.gather(*(child.ready for child in self.children))
        except TimeoutError:
            late = next(child for child in self.children if not child.ready.done())
            raise late.failure(f"was not ready within {timeout_s:.0f} s") from None
        self.replica_urls = [line for child, line in zip(self.children, lines, strict=True) if child.role == "control"]

    async def _spawn(self, name: str, role: str, args: list[str], env: Mapping[str, str]) -> None:
        command = [sys.executable, "-m", "roomscribe.cli", "--env-file", self.env_file]
        if self.verbose:
            command.append("-v")
        process = await asyncio.create_subprocess_exec(
            *command, role, *args,
            env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the demo only, which stops them in order
            preexec_fn=self._preexec, limit=1 << 20,
        )  # fmt: skip
        child = Child(name, role, process, asyncio.get_running_loop().create_future())
        self.children.append(child)
        self._pumps.append(asyncio.get_running_loop().create_task(self._pump(child)))

    async def _pump(self, child: Child) -> None:
        """Read a child's output: note when it is ready, pass its warnings on, keep its tail."""
        assert child.process.stdout is not None
        while True:
            try:
                raw = await child.process.stdout.readline()
            except ValueError:  # a line over the limit: skip it
                continue
            if not raw:
                break
            line = raw.decode(errors="replace").rstrip()
            ready = ready_line(child.role, line)
            if ready is not None and not child.ready.done():
                child.ready.set_result(ready)
            elif worth_showing(line, self.verbose):
                print(f"[{child.name}] {line}", file=sys.stderr, flush=True)
            else:
                child.hidden.append(line)
        await child.process.wait()
        if not child.ready.done():
            child.ready.set_exception(child.failure(f"exited (status {child.process.returncode}) before it was ready"))

    async def first_exit(self) -> Child:
        """Wait until a child exits (which, while the demo runs, it should not)."""
        waits = {asyncio.ensure_future(child.process.wait()): child for child in self.children}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        return waits[done.pop()]

    async def stop(self) -> None:
        """Control replicas first (they let their sessions go), then the workers (they drain), then Redis."""
        try:
            for role in ("control", "worker"):
                await asyncio.gather(*(self._stop_child(c) for c in self.children if c.role == role))
            await asyncio.gather(*self._pumps, return_exceptions=True)
            for child in self.children:  # a child that failed to start leaves a future nobody awaited
                if child.ready.done() and not child.ready.cancelled():
                    child.ready.exception()
        finally:
            self.redis.close()

    async def _stop_child(self, child: Child) -> None:
        if child.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(child.process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                print(f"[{child.name}] did not stop within {STOP_TIMEOUT_S:.0f} s: killed", file=sys.stderr, flush=True)
                with contextlib.suppress(ProcessLookupError):
                    child.process.kill()
                await child.process.wait()


async def run_cluster_demo(*, file: str, fast: bool, env_file: str, verbose: bool) -> int:
    """Start the cluster, stream `file` to the first control replica over ws, print the transcript."""
    from roomscribe.client.cli import push
    from tokens import mint_control_token, new_control_secret

    if not RedisServer.available():
        print(
            f"error: `roomscribe demo --cluster` needs Redis: `redis-server` is not on PATH ({INSTALL_HINT})",
            file=sys.stderr,
        )
        return 2
    cluster = LocalCluster(secret=new_control_secret(), env_file=env_file, verbose=verbose)
    print(f"Starting a cluster on loopback: redis-server, {WORKERS} workers (each loads the model) "
          f"and {REPLICAS} control replicas…", flush=True)  # fmt: skip
    try:
        await cluster.start()
        workers = ", ".join(c.name for c in cluster.children if c.role == "worker")
        print(f"Redis on {cluster.redis.url}; workers {workers}; control replicas "
              f"{', '.join(cluster.replica_urls)}", flush=True)  # fmt: skip
        token = mint_control_token(cluster.secret, "demo-user", ttl_s=600)
        url = cluster.replica_urls[0]
        print(f"Streaming {file} via raw PCM over the control socket of the first replica, {url}:", flush=True)
        client = asyncio.ensure_future(push(url, token, file=file, transport="ws", fast=fast))
        exited = asyncio.ensure_future(cluster.first_exit())
        try:
            await asyncio.wait({client, exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
            if not client.done():
                client.cancel()
            await asyncio.gather(client, exited, return_exceptions=True)
        if client.cancelled():  # a child exited first
            child = exited.result()
            raise child.failure(f"exited (status {child.process.returncode}) during the demo")
        return client.result()  # or raises what the client raised
    except ChildFailed as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        print("Stopping the cluster…", flush=True)
        await cluster.stop()
