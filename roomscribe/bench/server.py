"""The server under test: `roomscribe serve` in a subprocess (default) or a ControlServer in-process.

Either way the bench reads the server's CPU seconds and peak RSS from /proc. In a subprocess those
are the server's alone (control plane, ASR, and for LiveKit the embedded dev server); in-process
they include the bench's own client work (scope "bench process").

A bench that needs settings of its own (the soak: caps that fit its load) passes `overrides`
(Settings field → value); a subprocess then runs `python -m roomscribe.bench.server OVERRIDES_JSON`,
which serves like `roomscribe serve` with those fields set. Names this version's Settings does not
have are skipped and listed by `apply_overrides`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from roomscribe.bench import procstat
from roomscribe.bench.transport import Endpoint
from tokens import mint_control_token

if TYPE_CHECKING:
    from control.config import Settings
    from control.server import ControlServer

_URL_LINE = re.compile(r"control plane on (ws://\S+/v1/control)")


class BenchServer(Protocol):
    scope: str
    endpoint: Endpoint

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def cpu_seconds(self) -> float: ...

    def memory(self) -> dict[str, int]: ...


def _die_with_parent(sig: int = signal.SIGTERM) -> None:
    """In the child: ask Linux to send it `sig` when the bench process dies (no orphaned servers)."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, sig)


def _token_factory(secret: str):
    return lambda user: mint_control_token(secret, user, ttl_s=3600)


#: The bench measures the model and the transports, not admission control: it streams the accuracy
#: corpus at 8× real time and sweeps up to 16 sessions, so ws audio metering and the session cap
#: are off unless the environment sets them.
BENCH_ENV_DEFAULTS = {"ROOMSCRIBE_WS_AUDIO_RATE": "0", "ROOMSCRIBE_MAX_SESSIONS": "0"}


def apply_overrides(settings: Settings, overrides: Mapping[str, Any]) -> list[str]:
    """Set the named Settings fields; returns the names this version of Settings does not have."""
    known = {f.name for f in dataclasses.fields(settings)}
    for name, value in overrides.items():
        if name in known:
            setattr(settings, name, value)
    return sorted(set(overrides) - known)


def unknown_settings(overrides: Mapping[str, Any]) -> list[str]:
    """The names in `overrides` that are not Settings fields here (a subprocess skips them too)."""
    from control.config import Settings

    return apply_overrides(Settings(), overrides)


def spawn_logged(
    cmd: list[str], env: Mapping[str, str], log_prefix: str, *, death_signal: int = signal.SIGTERM
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start `cmd` with its stdout and stderr in a new temporary log file; it gets `death_signal`
    when the bench dies."""
    fd, name = tempfile.mkstemp(prefix=log_prefix, suffix=".log")
    on_death = functools.partial(_die_with_parent, death_signal) if sys.platform == "linux" else None
    # Popen only starts the process (no wait); preexec_fn rules out asyncio's subprocess transport.
    proc = subprocess.Popen(cmd, env=dict(env), stdout=fd, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            preexec_fn=on_death)  # fmt: skip
    os.close(fd)
    return proc, Path(name)


def _read_log(path: Path) -> str:
    """A start-up log so far (a few KB: read in the loop's thread)."""
    return path.read_text(errors="replace")


async def wait_for_line(
    proc: subprocess.Popen[bytes], log_path: Path, pattern: re.Pattern[str], timeout_s: float, what: str
) -> str:
    """Wait until `proc`'s log matches `pattern` and return the match's group 1 (or the whole match);
    RuntimeError with the log's tail if it exits or the time runs out first (`proc` is left as it is)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        match = pattern.search(_read_log(log_path))
        if match:
            return match.group(1) if pattern.groups else match.group(0)
        if proc.poll() is not None:
            break
        await asyncio.sleep(0.1)
    tail = _read_log(log_path)[-2000:]
    state = f"exited with code {proc.returncode}" if proc.poll() is not None else f"not ready after {timeout_s:.0f} s"
    raise RuntimeError(f"{what} did not start ({state}; log {log_path}):\n{tail}")


async def stop_process(
    proc: subprocess.Popen[bytes] | None, timeout_s: float = 30.0, *, again_after_s: float | None = None
) -> None:
    """SIGTERM (again after `again_after_s`, if given), then SIGKILL after `timeout_s`; nothing if
    it is not running."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    if again_after_s is not None:
        try:
            await asyncio.to_thread(proc.wait, again_after_s)
            return
        except subprocess.TimeoutExpired:
            proc.terminate()
    try:
        await asyncio.to_thread(proc.wait, timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        await asyncio.to_thread(proc.wait)


class SubprocessServer:
    """`python -m roomscribe.cli serve --port 0` with a fresh secret, started in the current directory;
    settings otherwise come from the environment and `.env` like any `roomscribe serve`
    (ROOMSCRIBE_MODEL_PATH etc. apply)."""

    scope = "server process"

    def __init__(
        self, *, startup_timeout_s: float = 120.0, extra_env: dict[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:  # fmt: skip
        self.secret = secrets.token_urlsafe(32)
        self.startup_timeout_s = startup_timeout_s
        self.extra_env = extra_env or {}
        self.overrides = dict(overrides or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self.endpoint = Endpoint("", _token_factory(self.secret))

    async def start(self) -> None:
        env = {**BENCH_ENV_DEFAULTS, **os.environ}
        env.update({
            "ROOMSCRIBE_CONTROL_SECRET": self.secret, "ROOMSCRIBE_HOST": "127.0.0.1",
            "ROOMSCRIBE_DEVSERVER_PORT": "0", "PYTHONUNBUFFERED": "1",
        })  # fmt: skip
        env.update(self.extra_env)
        cmd = [sys.executable, "-m", "roomscribe.cli", "serve", "--port", "0"]
        if self.overrides:
            cmd = [sys.executable, "-m", "roomscribe.bench.server", json.dumps(self.overrides)]
        self.proc, self.log_path = spawn_logged(cmd, env, "roomscribe-bench-server-")
        try:
            url = await wait_for_line(self.proc, self.log_path, _URL_LINE, self.startup_timeout_s, "`roomscribe serve`")
        except BaseException:
            await self.stop()
            raise
        self.endpoint = Endpoint(url, self.endpoint.token_for)

    async def stop(self) -> None:
        await stop_process(self.proc)

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        return procstat.cpu_seconds(self.proc.pid)

    def memory(self) -> dict[str, int]:
        assert self.proc is not None
        return procstat.memory_bytes(self.proc.pid)


class InProcessServer:
    """A ControlServer in this process (quicker to start; CPU and RSS include the bench client)."""

    scope = "bench process (server + client)"

    def __init__(self, engine=None, *, transport: str = "ws", overrides: Mapping[str, Any] | None = None) -> None:
        from control.config import Settings

        self.secret = secrets.token_urlsafe(32)
        settings = Settings.from_env({**BENCH_ENV_DEFAULTS, **os.environ})
        apply_overrides(settings, overrides or {})
        settings.host, settings.port, settings.control_secret = "127.0.0.1", 0, self.secret
        settings.devserver_port = 0
        self.settings = settings
        self._engine = engine
        self.server: ControlServer | None = None
        self.endpoint = Endpoint("", _token_factory(self.secret))

    async def start(self) -> None:
        from control.server import ControlServer

        self.server = ControlServer(self.settings, engine=self._engine)
        await self.server.start()
        self.endpoint = Endpoint(self.server.url, self.endpoint.token_for)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None

    def cpu_seconds(self) -> float:
        return procstat.cpu_seconds()

    def memory(self) -> dict[str, int]:
        return procstat.memory_bytes()


def main(argv: list[str] | None = None) -> int:
    """`python -m roomscribe.bench.server OVERRIDES_JSON`: `roomscribe serve --port 0` on loopback
    with the Settings fields in the JSON object set (the secret comes from the environment)."""
    from control.config import ConfigError, Settings
    from roomscribe.cli import _serve, _setup_logging

    args = sys.argv[1:] if argv is None else argv
    _setup_logging(verbose=False)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    overrides = json.loads(args[0]) if args else {}
    skipped = apply_overrides(settings, overrides)
    settings.host, settings.port = "127.0.0.1", 0
    print(f"bench server settings: {json.dumps(overrides)}; not in this version: {skipped}", flush=True)
    return asyncio.run(_serve(settings))


if __name__ == "__main__":
    sys.exit(main())
