"""Fair scheduling on the real model: a session that floods the shared engine with finals does not
hold back another session's finals (issue 11). Ordering only: latency figures belong in
`python -m roomscribe.bench.fairness`."""

from __future__ import annotations

from collections.abc import Callable

import jiwer
import numpy as np
import pytest

from agent.asr import AsrEngine
from agent.config import PipelineConfig
from agent.events import FinalTranscript, PipelineEvent, PipelineNotice, SpeechEnded, SpeechStarted
from agent.pipeline import TranscriptionPipeline
from agent_testutil import JFK_TEXT, LIBRI_TEXT, check_event_order, feed_paced, load_wav, norm

GAP = np.zeros(16000, np.int16)  # 1 s of silence between clips: each clip ends its utterance


class Recorder:
    """Every event of both pipelines in the order they were emitted, with how many finals the
    flooder still owed at that moment."""

    def __init__(self) -> None:
        self.log: list[tuple[str, PipelineEvent, int]] = []
        self.flooder: TranscriptionPipeline | None = None

    def sink(self, name: str) -> Callable[[PipelineEvent], None]:
        def on_event(ev: PipelineEvent) -> None:
            owed = int(self.flooder.stats["pending_finals"]) if self.flooder is not None else 0
            self.log.append((name, ev, owed))

        return on_event

    def events(self, name: str) -> list[PipelineEvent]:
        return [ev for who, ev, _ in self.log if who == name]


@pytest.mark.slow  # ~72 s of audio through the model at once
@pytest.mark.timeout(240)
async def test_a_flooding_session_does_not_hold_back_another_sessions_finals(engine: AsrEngine) -> None:
    libri, jfk = load_wav("libri_61-70968-0000.wav"), load_wav("jfk.wav")
    # 71.6 s: a backlog that outlasts the victim's four finals even on a fast, quiet machine.
    flood = np.concatenate([libri, GAP, jfk, GAP] * 4)
    rec = Recorder()
    flooder = TranscriptionPipeline(engine, PipelineConfig(), rec.sink("flooder"), participant="flooder")
    rec.flooder = flooder
    victim = TranscriptionPipeline(engine, PipelineConfig(), rec.sink("victim"), participant="victim")
    before = engine.stats
    try:
        await feed_paced(flooder, flood, 16000, speed=float("inf"))  # as fast as it goes
        queued = engine.pending_finals(flooder.owner)
        await feed_paced(victim, np.concatenate([jfk, GAP]), 16000, speed=float("inf"))
        await victim.finish()
        owed_after_victim = flooder.stats["pending_finals"]
        await flooder.finish()
    finally:
        await victim.aclose()
        await flooder.aclose()
    after = engine.stats

    for name in ("flooder", "victim"):
        check_event_order(rec.events(name))
    victim_finals = [(ev, owed) for who, ev, owed in rec.log if who == "victim" and isinstance(ev, FinalTranscript)]
    assert victim_finals, rec.events("victim")
    assert jiwer.wer(norm(JFK_TEXT), norm(" ".join(ev.text for ev, _ in victim_finals))) <= 0.1
    # The flooder had a backlog when the victim spoke, and still owed finals when the victim's
    # last final arrived: the victim was served in turns, not after the whole backlog (FIFO).
    assert queued >= 8, f"the flood queued only {queued} finals: no backlog to jump"
    assert owed_after_victim >= 2, (queued, owed_after_victim, victim_finals)
    assert all(owed >= 2 for _, owed in victim_finals), victim_finals
    # The flooder was told it is behind, and lost nothing: every utterance got its final.
    flood_events = rec.events("flooder")
    assert any(isinstance(e, PipelineNotice) and e.code == "asr_backlog" for e in flood_events)
    starts = [e for e in flood_events if isinstance(e, SpeechStarted)]
    finals = [e for e in flood_events if isinstance(e, FinalTranscript)]
    assert len(finals) == len(starts) == len([e for e in flood_events if isinstance(e, SpeechEnded)])
    reference = " ".join([LIBRI_TEXT, JFK_TEXT] * 4)
    assert jiwer.wer(norm(reference), norm(" ".join(f.text for f in finals))) <= 0.15
    submitted = after["finals_submitted"] - before["finals_submitted"]
    assert submitted == after["finals_completed"] - before["finals_completed"] > 0
    assert after["pending_finals"] == 0
