"""Scheduler rules, with a fake backend: priorities, replacement, staleness, bounds, batches."""

import asyncio
import threading
import time

import numpy as np
import pytest

from agent.asr import AsrEngine, AsrResult
from agent.config import AsrConfig
from agent.scheduler import AsrJob, AsrScheduler, JobKind

pytestmark = pytest.mark.timeout(20)


def job(kind: JobKind, owner: str, tag: float = 0.0, is_stale=None) -> AsrJob:
    return AsrJob(kind=kind, owner=owner, audio=np.full(4, tag, dtype=np.float32), is_stale=is_stale)


def take(s: AsrScheduler, n: int) -> list[AsrJob]:
    """The next batch; next_batch returns None only once the scheduler is closed."""
    batch = s.next_batch(n, timeout=0)
    assert batch is not None
    return batch


def test_finals_first_then_interims_in_order():
    s = AsrScheduler()
    i1 = job(JobKind.INTERIM, "a")
    f1 = job(JobKind.FINAL, "b")
    i2 = job(JobKind.INTERIM, "c")
    f2 = job(JobKind.FINAL, "c")  # supersedes c's pending interim
    for j in (i1, f1, i2, f2):
        s.submit(j)
    assert i2.future.result(timeout=0) is None and i2.drop_reason == "superseded"
    order = [take(s, 1)[0] for _ in range(3)]
    assert order == [f1, f2, i1]
    assert s.next_batch(1, timeout=0) == []


def test_newer_interim_replaces_stale_one_per_owner():
    s = AsrScheduler()
    old, new, other = job(JobKind.INTERIM, "a"), job(JobKind.INTERIM, "a"), job(JobKind.INTERIM, "b")
    for j in (old, other, new):
        s.submit(j)
    assert old.future.result(timeout=0) is None and old.drop_reason == "replaced"
    assert s.interims_dropped == 1
    batch = s.next_batch(8, timeout=0)
    assert batch == [other, new]  # one per owner, oldest owner first


def test_stale_interim_is_dropped_at_dispatch():
    s = AsrScheduler()
    stale = job(JobKind.INTERIM, "a", is_stale=lambda: True)
    fresh = job(JobKind.INTERIM, "b", is_stale=lambda: False)
    s.submit(stale)
    s.submit(fresh)
    assert s.next_batch(4, timeout=0) == [fresh]
    assert stale.future.result(timeout=0) is None and stale.drop_reason == "stale"


def test_global_interim_bound_drops_oldest():
    s = AsrScheduler(max_pending_interims=3)
    jobs = [job(JobKind.INTERIM, f"o{i}") for i in range(5)]
    for j in jobs:
        s.submit(j)
    assert [j.drop_reason for j in jobs] == ["overflow", "overflow", None, None, None]
    assert s.snapshot()["pending_interims"] == 3


def test_batches_are_of_one_kind():
    s = AsrScheduler()
    for i in range(3):
        s.submit(job(JobKind.FINAL, f"f{i}"))
        s.submit(job(JobKind.INTERIM, f"i{i}"))
    first = take(s, 8)
    assert [j.kind for j in first] == [JobKind.FINAL] * 3
    second = take(s, 8)
    assert [j.kind for j in second] == [JobKind.INTERIM] * 3


def test_close_drops_interims_but_drains_finals():
    s = AsrScheduler()
    f, i = job(JobKind.FINAL, "a"), job(JobKind.INTERIM, "b")
    s.submit(f)
    s.submit(i)
    s.close()
    assert i.future.result(timeout=0) is None and i.drop_reason == "closed"
    assert s.next_batch(1, timeout=0) == [f]
    assert s.next_batch(1, timeout=0) is None


class SlowBackend:
    """Echoes the job's tag after a delay (and after `gate` opens, if given); records what ran;
    raises `error` instead, if given."""

    def __init__(
        self,
        delay: float,
        gate: threading.Event | None = None,
        error: Exception | None = None,
    ) -> None:
        self.delay = delay
        self.gate = gate
        self.error = error
        self.ran: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def load(self) -> None:
        pass

    def transcribe_batch(self, jobs):
        if self.gate is not None:
            assert self.gate.wait(10), "test gate never opened"
        time.sleep(self.delay)
        if self.error is not None:
            raise self.error
        with self.lock:
            self.ran += [(j.kind.value, j.owner) for j in jobs]
        return [AsrResult(segments=(), audio_s=len(j.audio) / 16000, infer_s=self.delay) for j in jobs]


async def test_engine_under_load_never_drops_finals():
    backend = SlowBackend(0.02)
    eng = AsrEngine(AsrConfig(), backend=backend)
    await eng.start()
    try:
        owners = [f"p{i}" for i in range(6)]
        futs = []
        for round_ in range(10):
            for o in owners:
                futs.append(("interim", eng.submit(np.zeros(160, np.float32), final=False, owner=o)))
            if round_ % 3 == 2:
                for o in owners:
                    futs.append(("final", eng.submit(np.zeros(160, np.float32), final=True, owner=o)))
        results = [(k, await asyncio.wrap_future(j.future)) for k, j in futs]
        finals = [r for k, r in results if k == "final"]
        interims = [r for k, r in results if k == "interim"]
        assert len(finals) == 18 and all(r is not None for r in finals)
        dropped = sum(r is None for r in interims)
        assert dropped > 0
        st = eng.stats
        assert st["finals_completed"] == 18
        assert st["interims_dropped"] == dropped
        assert st["interims_completed"] + dropped == len(interims)
    finally:
        await eng.close()


async def _counts_seen_as_each_settles(backend: SlowBackend, n: int) -> tuple[list[dict], list]:
    """Submit `n` finals while `backend.gate` is shut, note the engine's counts from a callback
    that runs as each future settles (on the worker thread), then open the gate and await all.
    Returns the counts seen and the outcomes (result or exception) in submission order."""
    assert backend.gate is not None
    eng = AsrEngine(AsrConfig(), backend=backend)
    await eng.start()
    seen: list[dict] = []
    try:
        jobs = [eng.submit(np.zeros(160, np.float32), final=True, owner=f"p{i}") for i in range(n)]
        for j in jobs:
            j.future.add_done_callback(lambda _f: seen.append(eng.stats))
        backend.gate.set()
        outcomes = await asyncio.gather(
            *(asyncio.wrap_future(j.future) for j in jobs), return_exceptions=True
        )
    finally:
        await eng.close()
    return seen, outcomes


async def test_a_final_is_counted_completed_before_its_result_is_seen():
    """Whoever holds a result also sees it counted: submitted == completed needs no waiting."""
    seen, outcomes = await _counts_seen_as_each_settles(SlowBackend(0.0, gate=threading.Event()), 5)
    assert all(isinstance(r, AsrResult) for r in outcomes) and len(seen) == 5
    for n, st in enumerate(seen, start=1):
        assert st["finals_completed"] >= n and st["finals_submitted"] == 5, (n, st)
    assert seen[-1]["finals_completed"] == 5 and seen[-1]["running"] == 0


async def test_a_failed_batch_is_counted_and_every_awaiter_gets_the_error():
    backend = SlowBackend(0.0, gate=threading.Event(), error=ValueError("model broke"))
    seen, outcomes = await _counts_seen_as_each_settles(backend, 3)
    assert [str(e) for e in outcomes] == ["model broke"] * 3
    assert [st["finals_completed"] >= n for n, st in enumerate(seen, start=1)] == [True] * 3


def test_a_backend_returning_too_few_results_fails_the_batch():
    s = AsrScheduler()
    a, b = job(JobKind.FINAL, "a"), job(JobKind.FINAL, "b")
    s.submit(a)
    s.submit(b)
    batch = take(s, 2)
    s.complete(batch, [AsrResult(segments=(), audio_s=0.0, infer_s=0.0)])
    for j in (a, b):
        with pytest.raises(RuntimeError, match="1 results for 2 jobs"):
            j.future.result(timeout=0)
    assert s.snapshot()["finals_completed"] == 2 and s.snapshot()["running"] == 0


def test_speculative_takes_its_owners_turn_above_interims_and_is_cancellable():
    s = AsrScheduler()
    i = job(JobKind.INTERIM, "a")
    sp = job(JobKind.SPECULATIVE, "b")
    cancelled = job(JobKind.SPECULATIVE, "d")
    f = job(JobKind.FINAL, "c")
    for j in (i, sp, cancelled, f):
        s.submit(j)
    assert cancelled.future.cancel()
    assert s.next_batch(8, timeout=0) == [sp, f]  # in turns, same decoding: may share a batch
    assert s.next_batch(8, timeout=0) == [i]
    assert s.snapshot()["speculative_dropped"] == 1


def test_stale_speculative_is_dropped():
    s = AsrScheduler()
    flag = {"stale": False}
    sp = job(JobKind.SPECULATIVE, "a", is_stale=lambda: flag["stale"])
    s.submit(sp)
    flag["stale"] = True
    assert s.next_batch(1, timeout=0) == []
    assert sp.future.result(timeout=0) is None and sp.drop_reason == "stale"
