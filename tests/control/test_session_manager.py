"""Session manager logic (sequencing, replay, grace period, replacement) with a stand-in pipeline.

The stand-in is only for the manager's bookkeeping; the real pipeline is exercised end to end
in test_ws_transcription.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest

from agent.events import FinalTranscript, InterimTranscript, SpeechEnded, SpeechStarted
from control.protocol import ProtocolError
from control.schema import ServerMessage, encode
from control.session import Session, SessionManager, SessionOptions


class RecordingOutbox:
    """Keeps each message as the JSON object the socket would send."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def send_message(self, message: ServerMessage, *, droppable: bool = False, force: bool = False) -> None:
        self.messages.append(json.loads(encode(message)))

    def send_bytes(self, data: bytes) -> None:
        pass


class StandInPipeline:
    """Records feed calls; `utter` plays a whole utterance's events."""

    def __init__(self, on_event, participant, options=None) -> None:
        self.on_event = on_event
        self.finished = 0
        self.closed = False
        self.n = 0

    def utter(self, text: str) -> None:
        self.n += 1
        uid = f"u{self.n}"
        self.on_event(SpeechStarted(uid, self.n))
        self.on_event(InterimTranscript(uid, text[:3], self.n, self.n + 0.5))
        self.on_event(FinalTranscript(uid, text, self.n, self.n + 1, "silence"))
        self.on_event(SpeechEnded(uid, self.n + 1))

    def feed(self, samples: np.ndarray, sample_rate: int, channels: int = 1) -> None:
        pass

    def queued_final_audio_s(self) -> float:
        return 0.0

    async def finish(self) -> None:
        self.finished += 1

    async def aclose(self) -> None:
        self.closed = True

    @property
    def stats(self) -> dict:
        return {}


def manager(grace: float = 5.0, replay_limit: int = 100) -> SessionManager:
    return SessionManager(
        pipeline_factory=StandInPipeline,
        grace_period_s=grace,
        replay_limit=replay_limit,
    )


def stand_in(session: Session) -> StandInPipeline:
    pipeline = session.pipeline()
    assert isinstance(pipeline, StandInPipeline)
    return pipeline


OPTIONS = SessionOptions(transport="ws", audio=None, interim=True, echo=False)


async def test_seq_rises_by_one_and_resume_replays_only_missed_non_interim_events() -> None:
    mgr = manager()
    first = RecordingOutbox()
    session = await mgr.start("alice", OPTIONS, first)
    pipeline = stand_in(session)
    pipeline.utter("one two three")
    assert [m["seq"] for m in first.messages] == [1, 2, 3, 4]
    mgr.detach(session, first)
    pipeline.utter("four five six")  # while nobody is attached
    second = RecordingOutbox()
    assert mgr.resume("alice", session.id, 4, second) is session
    replayed = session.replay(second, 4)
    assert replayed == 3  # speech.start, final, speech.end; not the interim
    assert [m["type"] for m in second.messages] == ["speech.start", "transcript.final", "speech.end"]
    assert [m["seq"] for m in second.messages] == [5, 7, 8]
    pipeline.utter("seven")
    assert second.messages[3]["seq"] == 9


async def test_resume_refuses_other_users_and_unknown_sessions() -> None:
    mgr = manager()
    session = await mgr.start("alice", OPTIONS, RecordingOutbox())
    with pytest.raises(ProtocolError) as info:
        mgr.resume("mallory", session.id, 0, RecordingOutbox())
    assert info.value.code == "session.not_found"
    with pytest.raises(ProtocolError):
        mgr.resume("alice", "s_nope", 0, RecordingOutbox())
    with pytest.raises(ProtocolError) as info:
        mgr.resume("alice", session.id, 99, RecordingOutbox())
    assert info.value.code == "bad_request"


async def test_grace_period_ends_the_session() -> None:
    mgr = manager(grace=0.05)
    outbox = RecordingOutbox()
    session = await mgr.start("alice", OPTIONS, outbox)
    pipeline = stand_in(session)
    mgr.detach(session, outbox)
    await asyncio.sleep(0.2)
    assert session.ended and session.id not in mgr.sessions
    assert pipeline.closed
    with pytest.raises(ProtocolError):
        mgr.resume("alice", session.id, 0, RecordingOutbox())


async def test_resume_inside_grace_cancels_expiry() -> None:
    mgr = manager(grace=0.1)
    outbox = RecordingOutbox()
    session = await mgr.start("alice", OPTIONS, outbox)
    mgr.detach(session, outbox)
    mgr.resume("alice", session.id, 0, RecordingOutbox())
    await asyncio.sleep(0.3)
    assert not session.ended


async def test_second_session_of_a_user_replaces_the_first() -> None:
    mgr = manager()
    old_box = RecordingOutbox()
    old = await mgr.start("alice", OPTIONS, old_box)
    new = await mgr.start("alice", OPTIONS, RecordingOutbox())
    assert old.ended and not new.ended
    assert old_box.messages[-1] == {"type": "session.ended", "session_id": old.id, "reason": "replaced"}
    assert mgr.for_user("alice") is new


async def test_stop_finishes_pipelines_before_ending() -> None:
    mgr = manager()
    outbox = RecordingOutbox()
    session = await mgr.start("alice", OPTIONS, outbox)
    pipeline = stand_in(session)
    await mgr.stop(session)
    assert pipeline.finished == 1 and pipeline.closed
    assert outbox.messages[-1]["type"] == "session.ended" and outbox.messages[-1]["reason"] == "stopped"


async def test_replay_says_when_the_buffer_no_longer_reaches_back() -> None:
    mgr = manager(replay_limit=3)
    outbox = RecordingOutbox()
    session = await mgr.start("alice", OPTIONS, outbox)
    stand_in(session).utter("a")
    stand_in(session).utter("b")
    later = RecordingOutbox()
    session.replay(later, 0)
    assert later.messages[0]["code"] == "replay.truncated"
    assert [m["seq"] for m in later.messages[1:]] == [5, 7, 8]  # 6 was an interim


class FinalInFlightPipeline(StandInPipeline):
    """An utterance still being decoded: `finish()` emits its final (after a model-like pause)."""

    def __init__(self, on_event, participant, decode_s: float = 0.05) -> None:
        super().__init__(on_event, participant)
        self.decode_s = decode_s
        self.on_event(SpeechStarted("u1", 0.0))

    async def finish(self) -> None:
        self.finished += 1
        await asyncio.sleep(self.decode_s)
        self.on_event(FinalTranscript("u1", "the last words", 0.0, 1.0, "stop"))
        self.on_event(SpeechEnded("u1", 1.0))


def in_flight_manager(grace: float = 5.0, decode_s: float = 0.05, finish_timeout_s: float = 10.0) -> SessionManager:
    return SessionManager(
        pipeline_factory=lambda on_event, participant, options: FinalInFlightPipeline(on_event, participant, decode_s),
        grace_period_s=grace,
        finish_timeout_s=finish_timeout_s,
    )


class RecordingWatcher:
    """Stands in for a monitor subscription of the session's user."""

    def __init__(self, user: str) -> None:
        self.id = "sub_test"
        self.user = user
        self.session_id = None
        self.seen: list[str] = []

    def deliver(self, session_id: str, user: str, message: ServerMessage) -> None:
        self.seen.append(message.type)


async def end_with(mgr: SessionManager, reason: str, session: Session, outbox: RecordingOutbox) -> None:
    """End `session` the way `reason` happens."""
    if reason == "replaced":
        await mgr.start("alice", OPTIONS, RecordingOutbox())
    elif reason == "grace_expired":
        mgr.detach(session, outbox)
        while session.ending is None:  # noqa: ASYNC110  # the grace period (0.05 s) is a real timer
            await asyncio.sleep(0.01)
        await session.ending
    elif reason == "server_shutdown":
        await mgr.close()
    else:
        await mgr.stop(session, reason)


@pytest.mark.parametrize("reason", ["stopped", "replaced", "grace_expired", "server_shutdown"])
async def test_every_reason_delivers_the_final_in_flight_before_session_ended(reason: str) -> None:
    mgr = in_flight_manager(grace=0.05)
    outbox = RecordingOutbox()
    session = await mgr.start("alice", OPTIONS, outbox)
    watcher = RecordingWatcher("alice")
    session.watchers.add(watcher)  # type: ignore[arg-type]  # the subscription's interface, not its class
    session.pipeline()  # speech is open
    await end_with(mgr, reason, session, outbox)
    assert session.ended
    assert watcher.seen[-3:] == ["transcript.final", "speech.end", "session.ended"]
    if reason != "grace_expired":  # no socket is attached then: only watchers (and the log) see it
        types = [m["type"] for m in outbox.messages]
        assert types[-3:] == ["transcript.final", "speech.end", "session.ended"]
        assert outbox.messages[-1]["reason"] == reason


async def test_finishing_is_bounded_and_a_second_end_waits_for_the_first() -> None:
    mgr = in_flight_manager(decode_s=60.0, finish_timeout_s=0.2)
    outbox = RecordingOutbox()
    session = await mgr.start("alice", OPTIONS, outbox)
    pipeline = session.pipeline()
    assert isinstance(pipeline, FinalInFlightPipeline)
    first = asyncio.create_task(mgr.end(session, "replaced"))
    await asyncio.sleep(0)
    with pytest.raises(ProtocolError):  # ending: no resume any more
        mgr.resume("alice", session.id, 0, RecordingOutbox())
    await asyncio.wait_for(mgr.stop(session, "stopped"), 5)  # waits for the first end, bounded
    assert first.done() and session.ended and pipeline.closed
    assert [m for m in outbox.messages if m["type"] == "session.ended"] == [
        {"type": "session.ended", "session_id": session.id, "reason": "replaced"}
    ]
