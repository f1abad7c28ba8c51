"""The cluster store against a real redis-server: registry, journal fencing, streams, workers."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from cluster_harness import key_event
from control.cluster_session import UtteranceLedger
from control.cluster_store import ClusterStore, ClusterUnavailable, Unreadable
from control.schema import (
    Accepted,
    AudioFormat,
    AudioIn,
    Checkpoint,
    Command,
    CommandSpec,
    EventOut,
    FinishIn,
    SessionJob,
    SessionRecord,
    SpeechEnd,
    WorkerState,
    decode_cluster,
    encode_cluster,
)

pytestmark = pytest.mark.timeout(30)


def _record(session_id: str = "s_1", user: str = "alice") -> SessionRecord:
    return SessionRecord(session_id=session_id, user=user, room="r", transport="ws", audio=AudioFormat(), created_at=time.time())


async def test_a_registered_session_reads_back_and_is_the_users(store: ClusterStore) -> None:
    epoch = await store.create_session(_record(), owner="control-a", ttl_s=30)
    state = await store.session("s_1")
    assert state is not None
    assert (state.record.user, state.owner, state.epoch, state.seq, state.audio_bytes) == ("alice", "control-a", epoch, 0, 0)
    assert await store.user_session("alice") == "s_1"
    await store.delete_session("s_1", "alice")
    assert await store.session("s_1") is None
    assert await store.user_session("alice") is None


async def test_only_the_owning_epoch_deletes_a_session_and_replicas_mark_themselves_alive(store: ClusterStore) -> None:
    epoch_a = await store.create_session(_record(), owner="control-a", ttl_s=30)
    epoch_b = await store.take_ownership("s_1", "control-b")
    assert not await store.delete_session("s_1", "alice", epoch=epoch_a)  # fenced out: nothing deleted
    assert await store.session("s_1") is not None and await store.user_session("alice") == "s_1"
    assert await store.delete_session("s_1", "alice", epoch=epoch_b)
    assert await store.session("s_1") is None and await store.user_session("alice") is None
    assert not await store.replica_alive("control-a")
    await store.keep_replica("control-a", 30)
    assert await store.replica_alive("control-a")
    await store.remove_replica("control-a")
    assert not await store.replica_alive("control-a")


async def test_a_session_nobody_touches_expires(store: ClusterStore) -> None:
    async with key_event(store, "expired", "session:s_1") as expired:
        await store.create_session(_record(), owner="control-a", ttl_s=0.2)
        assert await store.touch("s_1", "alice", 0.2)
        await expired()  # Redis announces the expiry: no polling
    assert await store.session("s_1") is None
    assert not await store.touch("s_1", "alice", 0.2)


async def test_the_journal_replays_in_order_and_fences_out_an_old_owner(store: ClusterStore) -> None:
    epoch_a = await store.create_session(_record(), owner="control-a", ttl_s=30)
    for seq in (1, 2, 3):
        assert await store.journal_append("s_1", epoch_a, seq, b'{"n":%d}' % seq, cursor=f"{seq}-0", maxlen=100)
    epoch_b = await store.take_ownership("s_1", "control-b")
    assert epoch_b > epoch_a
    # Control replica A still believes it owns the session: its write is refused, not interleaved.
    assert not await store.journal_append("s_1", epoch_a, 4, b'{"n":4}', cursor="4-0", maxlen=100)
    assert await store.journal_append("s_1", epoch_b, 4, b'{"n":44}', cursor="5-0", maxlen=100)
    # An interim: numbered (the seq advances) but not kept for replay.
    assert await store.journal_append("s_1", epoch_b, 5, b'{"n":5}', cursor="6-0", maxlen=100, keep=False)
    events, lowest = await store.journal("s_1", after_seq=1)
    assert [seq for seq, _ in events] == [2, 3, 4]
    assert events[-1][1] == b'{"n":44}'
    assert lowest == 1
    state = await store.session("s_1")
    assert state is not None and (state.seq, state.cursor, state.owner) == (5, "6-0", "control-b")


async def test_input_and_output_streams_carry_messages_and_audio_in_order(store: ClusterStore) -> None:
    await store.create_session(_record(), owner="control-a", ttl_s=30)
    first = await store.send_input("s_1", AudioIn(sample_rate=16000), b"\x01\x00" * 160, audio_bytes=320)
    await store.send_input("s_1", FinishIn(request="f1", all=True))
    entries = await store.read_input("s_1", "0")
    assert [type(e.message) for e in entries] == [AudioIn, FinishIn]
    assert entries[0].id == first and entries[0].pcm == b"\x01\x00" * 160 and entries[1].pcm is None
    assert await store.read_input("s_1", entries[-1].id) == []
    state = await store.session("s_1")
    assert state is not None and state.audio_bytes == 320

    # The output stream is empty: the read waits for the entry (or gives up after 5 s).
    reader = asyncio.create_task(store.read_output("s_1", "0", block_ms=5000))
    await store.send_output("s_1", EventOut(message=msgspec.Raw(b'{"type":"speech.start"}')))
    (out,) = await asyncio.wait_for(reader, 5)
    assert isinstance(out.message, EventOut) and bytes(out.message.message) == b'{"type":"speech.start"}'


async def test_only_the_sessions_worker_writes_its_checkpoint_and_output(store: ClusterStore) -> None:
    await store.create_session(_record(), owner="control-a", ttl_s=30)
    assert await store.checkpoint("s_1") is None
    assert await store.takeover_job("s_1") == SessionJob(session_id="s_1", takeover=True)
    checkpoint = Checkpoint(input_id="5-0", audio_s=1.25, next_utterance=3)
    assert not await store.set_checkpoint("s_1", "w1", checkpoint)  # not its worker (yet)
    assert await store.send_output_as("s_1", "w1", Accepted(worker_id="w1")) is None
    await store.set_worker("s_1", "w1")
    assert await store.set_checkpoint("s_1", "w1", checkpoint)
    entry_id = await store.send_output_as("s_1", "w1", Accepted(worker_id="w1"))
    assert entry_id is not None
    (out,) = await store.read_output("s_1", "0")
    assert out.id == entry_id and out.message == Accepted(worker_id="w1")
    assert await store.checkpoint("s_1") == checkpoint
    assert await store.takeover_job("s_1") == SessionJob(
        session_id="s_1", takeover=True, input_after="5-0", audio_s=1.25, first_utterance=3
    )
    # Another worker took the session over: the first one is fenced out.
    await store.set_worker("s_1", "w2")
    assert not await store.set_checkpoint("s_1", "w1", Checkpoint(input_id="9-0", audio_s=2.0))
    assert await store.send_output_as("s_1", "w1", Accepted(worker_id="w1")) is None
    assert await store.checkpoint("s_1") == checkpoint
    # A session that is gone is not brought back by a late write (its keys would never expire).
    await store.delete_session("s_1", "alice")
    assert not await store.set_checkpoint("s_1", "w2", checkpoint)
    assert await store.send_output_as("s_1", "w2", Accepted(worker_id="w2")) is None
    assert await store.redis.exists(store.prefix + "session:s_1", store.prefix + "out:s_1") == 0


async def test_an_entry_of_a_newer_process_is_read_as_unreadable_not_an_error(store: ClusterStore) -> None:
    await store.create_session(_record(), owner="control-a", ttl_s=30)
    await store.redis.xadd(store.prefix + "in:s_1", {"m": b'{"type":"hologram","v":2}'})
    await store.send_input("s_1", FinishIn(request="f1"))
    first, second = await store.read_input("s_1", "0")
    assert first.message == Unreadable(raw=b'{"type":"hologram","v":2}')
    assert second.message == FinishIn(request="f1")


async def test_workers_heartbeat_and_take_jobs(store: ClusterStore) -> None:
    now = time.time()
    await store.heartbeat(WorkerState(worker_id="w1", capacity=2, active=0, at=now))
    await store.heartbeat(WorkerState(worker_id="w2", capacity=1, active=1, at=now))
    assert sorted(w.worker_id for w in await store.workers()) == ["w1", "w2"]
    start = await store.last_job_id("w1")
    await store.send_job("w1", SessionJob(session_id="s_1"))
    (job,) = await store.read_jobs("w1", start, block_ms=1000)
    assert isinstance(job.message, SessionJob) and job.message.session_id == "s_1"
    await store.remove_worker("w2")
    assert [w.worker_id for w in await store.workers()] == ["w1"]


async def test_an_unreachable_redis_is_a_cluster_unavailable_error(key_prefix: str) -> None:
    from redis_server import free_port

    store = ClusterStore.from_url(f"redis://127.0.0.1:{free_port()}/0", prefix=key_prefix)
    with pytest.raises(ClusterUnavailable):
        await store.ping()
    await store.close()


def test_the_ledger_drops_a_command_a_replacement_worker_repeats() -> None:
    ledger = UtteranceLedger()
    said = Command(seq=0, name="stop_note", phrase="end note", text="End note.", utterance_id="u2", start=1.0, end=2.0)
    assert not ledger.repeated(said)
    assert ledger.repeated(said)
    assert not ledger.repeated(msgspec.structs.replace(said, name="start_note"))  # another command of that final
    assert not ledger.repeated(SpeechEnd(seq=0, utterance_id="u2", end=2.0))
    assert ledger.repeated(msgspec.structs.replace(said, name="other"))  # the utterance is over


def test_a_record_carries_its_commands_and_an_old_record_reads_without() -> None:
    record = msgspec.structs.replace(_record(), commands=[CommandSpec(name="mark", phrases=["mark this"])])
    assert decode_cluster(encode_cluster(record)) == record
    old = msgspec.json.encode({k: v for k, v in msgspec.to_builtins(record).items() if k != "commands"})
    read = decode_cluster(old)
    assert isinstance(read, SessionRecord) and read.commands is None
