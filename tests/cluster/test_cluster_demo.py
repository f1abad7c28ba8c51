"""`roomscribe demo --cluster`: redis-server, two workers and two control replicas as processes, the
demo client over ws, the transcript printed, and no process left behind (also after Ctrl-C)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from redis_server import RedisServer
from roomscribe.cluster_demo import ready_line, worth_showing
from speech_samples import JFK_TEXT, ROOT, normalise, printed_finals_text, wer


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "ROOMSCRIBE_"))}
    env["PYTHONPATH"] = str(ROOT)  # this checkout's code, whichever one the environment has installed
    env.update(extra)
    return env


def _command(env_file: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "roomscribe.cli", "--env-file", str(env_file), "demo", "--cluster", *args]


def _processes_naming(text: str) -> list[int]:
    """Processes whose command line contains `text` (the demo's children carry its --env-file path)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(proc.name))
    return found


def _answers(redis_url_in: str) -> bool:
    """Whether the Redis the demo printed ("Redis on redis://127.0.0.1:PORT/0") still accepts connections."""
    match = re.search(r"redis://127\.0\.0\.1:(\d+)/", redis_url_in)
    assert match, redis_url_in
    try:
        socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture
def need_redis() -> None:
    if not RedisServer.available():
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed: .ci/run installs it from Debian")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")


@pytest.mark.slow  # ~20 s: two models load, then 11 s of speech in real time
@pytest.mark.timeout(240)
def test_the_cluster_demo_prints_the_transcript_and_leaves_nothing_behind(need_redis: None, tmp_path: Path) -> None:
    env_file = tmp_path / "absent.env"
    # Real time, as the demo's default: with --fast the finals of the whole file come after its end,
    # and on a loaded machine that wait can pass the client's dead-link limit while it stops.
    out = subprocess.run(_command(env_file), capture_output=True, text=True, timeout=200, env=_env(), cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert wer(JFK_TEXT, printed_finals_text(out.stdout)) <= 0.10, out.stdout
    assert normalise(printed_finals_text(out.stdout)).startswith("and so my fellow americ"), out.stdout
    assert "session ended (stopped)" in out.stdout
    assert out.stdout.count("ws://127.0.0.1:") >= 2, out.stdout  # both replicas listed
    assert _processes_naming(str(env_file)) == []  # no worker or control replica left
    assert not _answers(out.stdout)  # nor its redis-server


@pytest.mark.timeout(240)
def test_ctrl_c_stops_the_whole_cluster(need_redis: None, tmp_path: Path) -> None:
    env_file = tmp_path / "absent.env"
    process = subprocess.Popen(
        _command(env_file),  # real time: still streaming when interrupted
        env=_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as at a terminal, even under a background job
    )  # fmt: skip
    try:
        assert process.stdout is not None
        lines: list[str] = []
        while not (lines and lines[-1].startswith("Streaming")):
            line = process.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        children = set(_processes_naming(str(env_file))) - {process.pid}
        assert len(children) == 4, "".join(lines)  # two workers, two control replicas
        assert _answers("".join(lines))
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
        assert process.returncode == 130, "".join(lines) + rest
        assert "the cluster was stopped" in rest
        assert _processes_naming(str(env_file)) == []
        assert not _answers("".join(lines))
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.timeout(30)
def test_without_redis_server_it_says_how_to_install_it(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    out = subprocess.run(
        _command(tmp_path / "absent.env"), capture_output=True, text=True, timeout=25, env=_env(PATH=str(empty)), cwd=tmp_path
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "redis-server" in out.stderr and "apt-get install redis-server" in out.stderr


def test_what_the_demo_reads_from_its_children() -> None:
    assert ready_line("control", "roomscribe control replica on ws://127.0.0.1:4100/v1/control (Redis …)") == (
        "ws://127.0.0.1:4100/v1/control"
    )
    assert ready_line("control", "12:00:00 INFO control.server: control plane listening on ws://x/v1/control") is None
    assert ready_line("worker", "roomscribe worker demo-worker-1 taking up to 16 sessions from redis://…") is not None
    assert ready_line("worker", "12:00:00 INFO agent.worker: worker w: taking up to 16 sessions") is None
    assert not worth_showing("12:00:00 INFO agent.worker: runs session s_1", verbose=False)
    assert worth_showing("12:00:00 INFO agent.worker: runs session s_1", verbose=True)
    assert worth_showing("12:00:00 WARNING control.cluster_session: Redis call failed", verbose=False)
    assert worth_showing("Traceback (most recent call last):", verbose=False)
