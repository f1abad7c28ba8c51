"""`roomscribe worker`: a real worker process on a real redis-server takes a session, and drains on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import numpy as np
import pytest

from control.cluster_store import ClusterStore
from control.schema import (
    Accepted,
    AudioFormat,
    AudioIn,
    ClusterMessage,
    EventOut,
    Finished,
    FinishIn,
    SessionJob,
    SessionRecord,
)
from redis_server import RedisServer
from roomscribe.client.audio_files import read_wav
from speech_samples import JFK, JFK_TEXT, ROOT, wer


def _command(tmp_path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "roomscribe.cli", "--env-file", str(tmp_path / "absent.env"), "worker", *args]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "ROOMSCRIBE_"))}
    env["PYTHONPATH"] = str(ROOT)  # this checkout's code, whichever one the environment has installed
    return env


@pytest.mark.timeout(120)
async def test_the_worker_command_transcribes_a_session_and_drains_on_sigterm(redis_server: RedisServer, tmp_path: Path) -> None:
    worker_id = f"cli-{os.getpid()}"
    store = ClusterStore.from_url(redis_server.url)  # the command's default key prefix
    process = await asyncio.create_subprocess_exec(
        *_command(tmp_path, "--redis", redis_server.url, "--capacity", "1", "--id", worker_id),
        env=_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(60):  # the model loads first; then its heartbeat is in Redis
            while worker_id not in [w.worker_id for w in await store.workers()]:
                assert process.returncode is None, await process.communicate()
                await asyncio.sleep(0.1)
        (state,) = [w for w in await store.workers() if w.worker_id == worker_id]
        assert (state.capacity, state.active, state.draining) == (1, 0, False)

        sid = f"s-{worker_id}"
        record = SessionRecord(
            session_id=sid, user="alice", room="r", transport="ws", audio=AudioFormat(), created_at=time.time()
        )
        await store.create_session(record, owner="control-test", ttl_s=60)
        await store.send_job(worker_id, SessionJob(session_id=sid))
        samples = np.concatenate([read_wav(JFK).samples, np.zeros(8000, np.int16)])
        for i in range(0, len(samples), 1600):
            await store.send_input(sid, AudioIn(sample_rate=16000), samples[i : i + 1600].astype("<i2").tobytes())
        await store.send_input(sid, FinishIn(request="f1", all=True))
        messages: list[ClusterMessage] = []
        after = "0"
        async with asyncio.timeout(60):
            while not messages or not isinstance(messages[-1], Finished):
                entries = await store.read_output(sid, after, block_ms=1000)
                messages += [e.message for e in entries]
                after = entries[-1].id if entries else after
        assert messages[0] == Accepted(worker_id=worker_id)
        events = [msgspec.json.decode(bytes(m.message)) for m in messages if isinstance(m, EventOut)]
        text = " ".join(e["text"] for e in events if e["type"] == "transcript.final")
        assert wer(JFK_TEXT, text) <= 0.1, text

        process.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, out + err
        assert f"roomscribe worker {worker_id}".encode() in out
        assert worker_id not in [w.worker_id for w in await store.workers()]  # it left the registry
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()
        await store.delete_session(f"s-{worker_id}", "alice")
        await store.close()


@pytest.mark.timeout(30)
def test_the_worker_command_needs_a_reachable_redis(tmp_path: Path) -> None:
    from redis_server import free_port

    missing = subprocess.run(_command(tmp_path), env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=25)
    assert missing.returncode == 2 and "ROOMSCRIBE_REDIS_URL" in missing.stderr, missing.stderr
    down = subprocess.run(
        _command(tmp_path, "--redis", f"redis://127.0.0.1:{free_port()}/0"),
        env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=25,
    )  # fmt: skip
    assert down.returncode == 2 and "Redis did not answer" in down.stdout, down.stdout + down.stderr
