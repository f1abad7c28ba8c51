"""A worker's GET /healthz (`roomscribe worker --health-port`): Redis reachability, sessions,
capacity, draining; 503 while Redis cannot be reached."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.asr import AsrEngine
from agent.config import PipelineConfig
from agent.worker import TranscriptionWorker
from agent.worker_health import HealthServer
from control.cluster_store import ClusterStore
from redis_server import RedisServer, free_port
from speech_samples import ROOT


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, object]]:
    async with http.get(url) as response:
        return response.status, await response.json()


@pytest.mark.timeout(60)
async def test_health_reports_the_worker_and_redis(engine: AsrEngine, key_prefix: str) -> None:
    redis = RedisServer()
    redis.start()
    store = ClusterStore.from_url(redis.url, prefix=key_prefix)
    worker = TranscriptionWorker(store, engine, PipelineConfig(), worker_id="health-1", capacity=3)
    health = HealthServer(worker, "127.0.0.1", 0)
    try:
        await worker.start()
        await health.start()
        async with aiohttp.ClientSession() as http:
            status, report = await _get(http, health.url)
            assert status == 200
            assert report == {
                "status": "ok", "worker_id": "health-1", "redis": "ok", "active": 0, "capacity": 3, "draining": False
            }  # fmt: skip
            async with http.get(health.url.replace("/healthz", "/metrics")) as response:
                assert response.status == 200
                families = {f.name for f in text_string_to_metric_families(await response.text())}
            assert {"roomscribe_sessions", "roomscribe_decode_queue_depth", "roomscribe_final_latency_seconds"} <= families
            await redis.astop()
            status, report = await _get(http, health.url)
            assert status == 503 and report["status"] == "degraded"
            assert str(report["redis"]).startswith("unavailable"), report
            await redis.astart()
            async with asyncio.timeout(20):  # nothing announces Redis's return: poll as a probe would
                while (await _get(http, health.url))[0] != 200:  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
            await worker.drain()
            status, report = await _get(http, health.url)
            assert status == 200 and report["draining"] is True
    finally:
        await health.stop()
        await worker.stop()
        await store.close()
        redis.close()


@pytest.mark.timeout(120)
async def test_the_worker_command_serves_health_on_its_port(redis_server: RedisServer, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "ROOMSCRIBE_"))}
    env["PYTHONPATH"] = str(ROOT)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "roomscribe.cli", "--env-file", str(tmp_path / "absent.env"), "worker",
        "--redis", redis_server.url, "--capacity", "2", "--id", f"health-cli-{os.getpid()}", "--health-port", str(port),
        env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        async with asyncio.timeout(60):  # the model loads first
            line = (await process.stdout.readline()).decode()
        assert f"health: http://127.0.0.1:{port}/healthz" in line, line
        async with aiohttp.ClientSession() as http:
            status, report = await _get(http, f"http://127.0.0.1:{port}/healthz")
        assert status == 200 and report["capacity"] == 2 and report["redis"] == "ok", report
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()


def test_the_health_port_setting() -> None:
    from control.config import ConfigError, Settings

    assert Settings.from_env({}).worker_health_port == 0  # off by default
    assert Settings.from_env({"ROOMSCRIBE_WORKER_HEALTH_PORT": "8090"}).worker_health_port == 8090
    with pytest.raises(ConfigError, match="ROOMSCRIBE_WORKER_HEALTH_PORT"):
        Settings.from_env({"ROOMSCRIBE_WORKER_HEALTH_PORT": "70000"})
