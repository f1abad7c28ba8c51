"""A throwaway `redis-server` (Debian's) on a free loopback port: `roomscribe demo --cluster` and the tests.

No persistence, no config file, nothing left behind: it runs in a temporary directory and is
stopped (and can be restarted on the same port, to test a Redis outage) by whoever owns it.
Standard library only.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable

REDIS_SERVER = "redis-server"
#: What to tell someone who has no redis-server.
INSTALL_HINT = "sudo apt-get install redis-server"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process on 127.0.0.1:`port` (a free one unless given).

    `preexec_fn` runs in the child before redis-server starts (e.g. `die_with_parent`).
    """

    def __init__(self, port: int | None = None, *, preexec_fn: Callable[[], object] | None = None) -> None:
        self.port = port or free_port()
        self._dir = tempfile.mkdtemp(prefix="roomscribe-redis-")
        self._preexec_fn = preexec_fn
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def available() -> bool:
        return shutil.which(REDIS_SERVER) is not None

    def start(self, timeout_s: float = 10.0) -> None:
        """Start it and wait until it answers PING."""
        args = [
            REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
            "--dir", self._dir, "--protected-mode", "yes", "--loglevel", "warning",
        ]  # fmt: skip
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=self._preexec_fn)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                raise RuntimeError(f"redis-server exited at start (code {self._process.returncode}): {err}")
            if _answers_ping(self.port):
                return
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"redis-server did not answer on port {self.port} within {timeout_s} s")

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The running redis-server (None when stopped)."""
        return self._process

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL); its data is gone (no persistence)."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()

    def close(self) -> None:
        """Stop it and remove its directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    async def astart(self) -> None:
        await asyncio.to_thread(self.start)


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False
