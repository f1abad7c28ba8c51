"""`GET /healthz` of a transcription worker (`roomscribe worker --health-port`): for a load
balancer, an orchestrator's probe or a person.

200 with `{"status": "ok", "worker_id", "redis": "ok", "active", "capacity", "draining"}` while
the worker can reach Redis (a draining worker still answers 200, with `"draining": true`); 503 with
`"status": "degraded"` and `"redis": "unavailable: …"` while it cannot (its sessions wait).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from agent.worker import TranscriptionWorker
from control.cluster_store import ClusterUnavailable
from control.metrics import CONTENT_TYPE

#: How long the health check waits for Redis to answer PING.
PING_TIMEOUT_S = 2.0
WORKER_KEY = web.AppKey("worker", TranscriptionWorker)


async def health_report(worker: TranscriptionWorker, ping_timeout_s: float = PING_TIMEOUT_S) -> dict[str, Any]:
    """The worker's health: Redis reachability and its sessions."""
    state = worker.state()
    report: dict[str, Any] = {
        "status": "ok",
        "worker_id": worker.worker_id,
        "redis": "ok",
        "active": state.active,
        "capacity": state.capacity,
        "draining": state.draining,
    }
    try:
        await asyncio.wait_for(worker.store.ping(), ping_timeout_s)
    except (ClusterUnavailable, TimeoutError) as exc:
        report["status"] = "degraded"
        report["redis"] = f"unavailable: {type(exc).__name__}"
    return report


async def _healthz(request: web.Request) -> web.Response:
    report = await health_report(request.app[WORKER_KEY])
    return web.json_response(report, status=200 if report["status"] == "ok" else 503)


async def _metrics(request: web.Request) -> web.Response:
    metrics = request.app[WORKER_KEY].metrics
    return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})


def create_health_app(worker: TranscriptionWorker) -> web.Application:
    app = web.Application()
    app[WORKER_KEY] = worker
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    return app


class HealthServer:
    """The worker's health endpoint on `host:port` (port 0: a free one)."""

    def __init__(self, worker: TranscriptionWorker, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._runner = web.AppRunner(create_health_app(worker), handle_signals=False, access_log=None)

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []  # aiohttp exposes no public accessor
        if sockets:
            self.port = sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/healthz"

    async def stop(self) -> None:
        await self._runner.cleanup()
