"""Fair scheduling of finals across owners (issue 11), with fakes: owners take turns (a speculative
final takes its owner's turn), each owner's finals stay in order, interims still come after every
final, batches are short while another owner is speaking, and a backlog is reported, not dropped."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from agent.asr import AsrEngine, AsrResult
from agent.config import AsrConfig
from agent.scheduler import AsrJob, AsrScheduler, JobKind, OwnerBacklog

pytestmark = pytest.mark.timeout(20)


class Clock:
    """A hand-moved monotonic clock for the scheduler's notion of an active owner."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, s: float) -> None:
        self.now += s


def quiet_scheduler() -> tuple[AsrScheduler, Clock]:
    """A scheduler whose clock the test moves (2 s activity window)."""
    clock = Clock()
    return AsrScheduler(clock=clock, active_s=2.0), clock


def job(kind: JobKind, owner: str, tag: int = 0) -> AsrJob:
    return AsrJob(kind=kind, owner=owner, audio=np.full(4, tag, dtype=np.float32))


def take(s: AsrScheduler, n: int) -> list[AsrJob]:
    """The next batch; next_batch returns None only once the scheduler is closed and drained."""
    batch = s.next_batch(n, timeout=0)
    assert batch is not None
    return batch


def tags(jobs: Sequence[AsrJob]) -> list[tuple[str, int]]:
    return [(j.owner, int(j.audio[0])) for j in jobs]


def flood(s: AsrScheduler, owner: str, n: int) -> list[AsrJob]:
    jobs = [job(JobKind.FINAL, owner, tag=k) for k in range(n)]
    for j in jobs:
        s.submit(j)
    return jobs


def test_another_owners_final_waits_one_turn_not_the_whole_flood() -> None:
    s = AsrScheduler()
    flooded = flood(s, "flooder", 20)
    other = job(JobKind.FINAL, "other")
    s.submit(other)
    assert take(s, 1) == [flooded[0]]
    assert take(s, 1) == [other]  # its turn comes right after the flooder's first
    assert [take(s, 1)[0] for _ in range(19)] == flooded[1:]  # the flooder's order is kept
    assert take(s, 1) == []


def test_a_batch_of_finals_is_filled_by_turns() -> None:
    s, clock = quiet_scheduler()
    for owner, n in (("a", 20), ("b", 1), ("c", 2)):
        flood(s, owner, n)
    clock.advance(5)  # nobody else is speaking: full batches
    first, second = take(s, 4), take(s, 4)
    assert tags(first) == [("a", 0), ("b", 0), ("c", 0), ("a", 1)]
    assert tags(second) == [("c", 1), ("a", 2), ("a", 3), ("a", 4)]  # b is done: a fills the batch
    rest = [j for _ in range(4) for j in take(s, 4)]
    assert [k for o, k in tags(first + second + rest) if o == "a"] == list(range(20))
    assert s.snapshot()["pending_finals"] == 0


def test_a_newly_waiting_owner_joins_the_end_of_the_round() -> None:
    s = AsrScheduler()
    for owner in ("a", "b", "c"):
        flood(s, owner, 5)
    assert tags(take(s, 2)) == [("a", 0), ("b", 0)]
    s.submit(job(JobKind.FINAL, "late"))
    assert tags(take(s, 4)) == [("c", 0), ("a", 1), ("b", 1), ("late", 0)]


def test_a_speculative_final_takes_its_owners_turn_and_interims_wait_for_every_final() -> None:
    s, clock = quiet_scheduler()
    flooded = flood(s, "flooder", 6)
    interim, spec = job(JobKind.INTERIM, "other"), job(JobKind.SPECULATIVE, "other")
    s.submit(interim)
    s.submit(spec)
    clock.advance(5)
    assert take(s, 4) == [flooded[0], spec, *flooded[1:3]]  # not after the whole flood
    assert take(s, 4) == flooded[3:]
    assert take(s, 4) == [interim]


def test_a_speculative_final_comes_after_its_owners_queued_finals() -> None:
    s, clock = quiet_scheduler()
    spec = job(JobKind.SPECULATIVE, "a")
    s.submit(spec)
    queued = flood(s, "a", 2)  # it holds one turn, finals first
    clock.advance(5)
    assert take(s, 4) == [*queued, spec]
    assert s.snapshot()["owners_with_finals"] == 0 and s.next_batch(4, timeout=0) == []


def test_a_queued_final_keeps_the_turn_of_its_owners_cancelled_speculative_final() -> None:
    s, clock = quiet_scheduler()
    flooded = flood(s, "flooder", 3)
    spec = job(JobKind.SPECULATIVE, "other")
    s.submit(spec)
    assert spec.future.cancel()  # the utterance ended while it was queued: a real final replaces it
    final = job(JobKind.FINAL, "other")
    s.submit(final)
    clock.advance(5)
    assert take(s, 4) == [flooded[0], final, *flooded[1:]]
    assert s.snapshot()["speculative_dropped"] == 1 and s.snapshot()["pending_speculative"] == 0


def test_one_slot_per_owner_while_another_owner_is_speaking() -> None:
    s, clock = quiet_scheduler()
    flooded = flood(s, "flooder", 12)
    clock.advance(1)
    s.submit(job(JobKind.INTERIM, "speaker"))  # speaking: its final is on its way
    assert take(s, 4) == [flooded[0]]  # a short batch for that final to wait for
    final = job(JobKind.FINAL, "speaker")
    s.submit(final)
    assert take(s, 4) == [flooded[1], final]  # its own batch is short too
    clock.advance(2.5)  # nothing from the speaker for 2.5 s: the flooder's batches fill again
    assert take(s, 4) == flooded[2:6]
    s.submit(job(JobKind.INTERIM, "speaker"))
    assert take(s, 4) == [flooded[6]]


def test_owners_that_went_quiet_are_forgotten() -> None:
    s, clock = quiet_scheduler()
    for k in range(50):
        s.submit(job(JobKind.INTERIM, f"gone-{k}"))
    assert len(take(s, 64)) == 50 and s.snapshot()["active_owners"] == 50
    clock.advance(2.5)
    assert take(s, 4) == [] and s.snapshot()["active_owners"] == 0


def test_backlogged_owners_share_full_batches() -> None:
    s, _ = quiet_scheduler()
    a, b = flood(s, "a", 4), flood(s, "b", 4)  # both active, both waiting: nobody's final is coming
    assert take(s, 4) == [a[0], b[0], a[1], b[1]]


def test_an_owner_over_the_bound_is_reported_once_and_loses_nothing(caplog: pytest.LogCaptureFixture) -> None:
    s = AsrScheduler(max_owner_finals=3)
    with caplog.at_level(logging.WARNING, logger="agent.scheduler"):
        flooded = flood(s, "flooder", 5)
    (record,) = caplog.records  # once, when the bound was crossed
    assert record.getMessage().startswith("ASR owner 'flooder' has 4 finals queued (bound 3)")
    assert s.owner_backlog("flooder") == OwnerBacklog(finals=5, audio_s=5 * 4 / 16000)
    assert s.owner_backlog("nobody") == OwnerBacklog(finals=0, audio_s=0.0)
    snap = s.snapshot()
    assert (snap["owners_over_bound"], snap["finals_backlog_reports"]) == (1, 1)
    assert take(s, 8) == flooded and all(j.drop_reason is None for j in flooded)  # nothing dropped
    assert s.snapshot()["owners_over_bound"] == 0  # re-armed once its queue emptied
    flood(s, "flooder", 4)
    assert s.snapshot()["finals_backlog_reports"] == 2


def test_a_cancelled_final_gives_up_its_turn() -> None:
    s = AsrScheduler()
    a0, a1 = flood(s, "a", 2)
    b0 = job(JobKind.FINAL, "b")
    s.submit(b0)
    assert a0.future.cancel()  # its awaiter went away while it was queued
    assert take(s, 4) == [b0, a1]
    assert s.snapshot()["pending_finals"] == 0 and s.pending_finals("a") == 0


def test_close_still_serves_every_owners_queued_finals() -> None:
    s = AsrScheduler()
    queued = flood(s, "a", 3) + flood(s, "b", 3)
    s.close()
    served = [j for _ in range(3) for j in take(s, 2)]
    assert sorted(tags(served)) == sorted(tags(queued))
    assert s.next_batch(2, timeout=0) is None


class GatedBackend:
    """Holds every batch until `gate` opens; records the owner of each job it ran, in order."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.ran: list[str] = []

    def load(self) -> None:
        pass

    def transcribe_batch(self, jobs: Sequence[AsrJob]) -> list[AsrResult]:
        assert self.gate.wait(10), "test gate never opened"
        self.ran += [j.owner for j in jobs]
        return [AsrResult(segments=(), audio_s=len(j.audio) / 16000, infer_s=0.0) for j in jobs]


async def test_engine_runs_another_owners_final_in_the_next_batch() -> None:
    """Through the worker thread: 20 finals of one owner are queued before another owner's one;
    the other's runs at the latest in the batch after the one the worker may already hold."""
    backend = GatedBackend()
    eng = AsrEngine(AsrConfig(max_batch=4), backend=backend)
    await eng.start()
    try:
        flooded = [eng.submit(np.zeros(160, np.float32), final=True, owner="flooder") for _ in range(20)]
        other = eng.submit(np.zeros(160, np.float32), final=True, owner="other")
        backend.gate.set()
        await asyncio.gather(*(asyncio.wrap_future(j.future) for j in [*flooded, other]))
    finally:
        await eng.close()
    assert len(backend.ran) == 21 and backend.ran.index("other") < 2 * 4, backend.ran
    assert eng.stats["finals_completed"] == 21 and eng.stats["pending_finals"] == 0
