"""`roomscribe worker`: one transcription worker process (model, Redis, signals)."""

from __future__ import annotations

import asyncio
import logging
import signal

from agent.asr import AsrEngine
from agent.worker import TranscriptionWorker
from agent.worker_health import HealthServer
from control.admission import SESSIONS_PER_CORE, usable_cores
from control.cluster_store import ClusterStore, ClusterUnavailable
from control.config import Settings
from control.livekit_media import LiveKitTransport

log = logging.getLogger(__name__)


def worker_capacity(settings: Settings) -> int:
    """ROOMSCRIBE_WORKER_CAPACITY, or SESSIONS_PER_CORE × the usable cores."""
    return settings.worker_capacity or SESSIONS_PER_CORE * usable_cores()


async def run_worker(settings: Settings, worker_id: str) -> int:
    """Run until SIGTERM/SIGINT, then drain (a second signal: stop at once). 0, or 2 without Redis."""
    store = ClusterStore.from_url(settings.redis_url)
    try:
        await store.ping()
    except ClusterUnavailable as error:
        print(f"error: {error} (ROOMSCRIBE_REDIS_URL / --redis)", flush=True)
        await store.close()
        return 2
    engine = AsrEngine(settings.asr)
    await engine.start()
    # LiveKit sessions: this worker's agents join the rooms (no embedded dev server in a cluster).
    livekit = LiveKitTransport(settings, settings.livekit_url) if settings.livekit_url else None
    worker = TranscriptionWorker(
        store, engine, settings.pipeline, worker_id=worker_id, capacity=worker_capacity(settings), livekit=livekit
    )
    health = HealthServer(worker, settings.host, settings.worker_health_port) if settings.worker_health_port else None
    signalled = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, signalled.set)
    try:
        await worker.start()
        if health is not None:
            try:
                await health.start()
            except OSError as error:
                print(f"error: cannot serve /healthz on {settings.host}:{settings.worker_health_port}: {error}", flush=True)
                await worker.stop()
                return 2
        where = f"; health: {health.url}" if health is not None else ""
        taking = f"taking up to {worker.capacity} sessions from {settings.redis_url}"
        print(f"roomscribe worker {worker_id} {taking}{where}", flush=True)
        await signalled.wait()
        signalled.clear()
        draining = loop.create_task(worker.drain())
        again = loop.create_task(signalled.wait())
        await asyncio.wait({draining, again}, return_when=asyncio.FIRST_COMPLETED)
        if not draining.done():
            log.info("worker %s: second signal: stopping now", worker_id)
            await worker.stop()
        again.cancel()
        await asyncio.gather(draining, again, return_exceptions=True)
    finally:
        if health is not None:
            await health.stop()
        await engine.close()
        await store.close()
    return 0
