"""`roomscribe control`: a replica listens on a non-loopback address with the default settings
(it serves ws sessions only, so the embedded LiveKit dev server's loopback rule does not apply)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from redis_server import RedisServer
from speech_samples import ROOT


@pytest.mark.timeout(60)
def test_a_replica_listens_on_all_addresses_without_livekit_settings(redis_server: RedisServer, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "ROOMSCRIBE_"))}
    env.update(PYTHONPATH=str(ROOT), ROOMSCRIBE_CONTROL_SECRET=secrets.token_urlsafe(32))
    command = [sys.executable, "-m", "roomscribe.cli", "--env-file", str(tmp_path / "absent.env"), "control",
               "--host", "0.0.0.0", "--port", "0", "--redis", redis_server.url]  # fmt: skip
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("roomscribe control replica on ws://0.0.0.0:"), line + process.communicate(timeout=10)[1]
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        assert "ws sessions only" in err
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
