"""The cluster's state and bus in Redis: session registry, event journals, per-session streams, workers.

Every key starts with the store's prefix (default `roomscribe:`). Per session `{sid}`:

- `session:{sid}` (hash): `record` (a SessionRecord), `worker`, `owner` (the control replica holding its
  socket, if any), `epoch` (raised by every new owner: only the owner of the current epoch may write
  the journal), `seq` (the last journaled event), `cursor` (the output-stream entry the journal has
  consumed), `bytes` (ws audio bytes taken from the client), `evicted` (journal entries trimmed),
  `checkpoint` (a Checkpoint: where a replacement worker continues);
- `journal:{sid}` (stream): the numbered events a resume replays, bounded like the in-process replay log;
- `in:{sid}` (stream): control → worker, audio and finish/end requests, in order;
- `out:{sid}` (stream): worker → control, session events and acknowledgements, in order;
- `user:{user}` (string): the user's current session id.

Workers: `workers` (hash worker id → WorkerState) and `jobs:{worker id}` (stream of SessionJob).
Control replicas: `replica:{replica id}` (string), there while the replica lives. Monitors:
`watch:{user}` (pub/sub channel of `Watched`): every event of the user's sessions.
Every session key expires `ttl_s` after the last `touch`, so a session no process looks after is gone
after its grace period. All I/O is here; what the messages mean is control/schema.py's.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from control.schema import (
    Checkpoint,
    ClusterMessage,
    SessionJob,
    SessionRecord,
    Watched,
    WorkerState,
    decode_cluster,
    encode_cluster,
)
from roomscribe.common.backoff import Backoff

log = logging.getLogger(__name__)

#: What a Redis call raises while Redis is unreachable or restarting.
REDIS_ERRORS = (RedisError, OSError)
#: Pauses between retries of a failed Redis call: 0.1 s doubling to 2 s (Redis restarting takes seconds).
REDIS_RETRY = Backoff(base_s=0.1, cap_s=2.0, attempts=None, jitter=0.25)

T = TypeVar("T")


async def until_redis_answers(call: Callable[[], Awaitable[T]], what: str) -> T:
    """Run a Redis call until it succeeds (Redis may be restarting); nothing is dropped meanwhile
    and the caller's order is kept. `what` names the call in the warning."""
    attempt = 0
    while True:
        try:
            return await call()
        except REDIS_ERRORS as exc:
            delay = REDIS_RETRY.delay(attempt)
            attempt += 1
            log.warning("%s failed (%s); retrying in %.1f s", what, type(exc).__name__, delay)
            await asyncio.sleep(delay)


#: Entries an output stream keeps at most: a bound, not a buffer meant to fill (its reader keeps up).
STREAM_MAXLEN = 1200
#: Entries a session's input stream keeps at most: 10 minutes of 20 ms frames (the bundled clients'),
#: about 19 MB of 16 kHz audio. Its worker trims it at every checkpoint (the input before one is
#: never read again), so it holds only what is not yet settled: the bound matters only when a worker
#: is stuck for minutes inside one utterance.
INPUT_MAXLEN = 30_000

# Number an event only while `epoch` is the session's current one (returns 1; 0 when fenced out);
# keep it for replay when ARGV[6] is 1 (interims and tokens are numbered but not replayed).
_JOURNAL_SCRIPT = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end
if ARGV[6] == '1' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], ARGV[2] .. '-0', 'm', ARGV[3])
end
redis.call('HSET', KEYS[1], 'seq', ARGV[2])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'cursor', ARGV[4]) end
return 1
"""

# Worker writes, fenced: only while the session exists and `worker` is the writer (a worker that
# lost the session, or one declared dead that still runs, writes nothing; no key is recreated).
# Record a worker's checkpoint (only as the session's worker) and drop the input before it: no
# worker will read it again, so the input stream holds only what is not yet settled.
_CHECKPOINT_SCRIPT = """
if redis.call('HGET', KEYS[1], 'worker') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'checkpoint', ARGV[2])
redis.call('XTRIM', KEYS[2], 'MINID', ARGV[3])
return 1
"""
# Delete a session's keys (KEYS[1] its hash, KEYS[#KEYS] the user's pointer, removed only if it still
# names ARGV[1]); with ARGV[2] set, only while that epoch owns the session (returns 0 otherwise).
_DELETE_SCRIPT = """
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[2] then return 0 end
local user = KEYS[#KEYS]
if redis.call('GET', user) == ARGV[1] then redis.call('DEL', user) end
for i = 1, #KEYS - 1 do redis.call('DEL', KEYS[i]) end
return 1
"""

_WORKER_OUTPUT_SCRIPT = """
if redis.call('HGET', KEYS[1], 'worker') ~= ARGV[1] then return false end
return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'm', ARGV[2])
"""


async def _reply(result: Awaitable[T] | T) -> T:
    """The reply of a redis-py command that is typed for both its clients (on the asyncio one it is awaitable)."""
    if inspect.isawaitable(result):
        return await result
    return result


class ClusterUnavailable(Exception):
    """Redis cannot be reached (or failed a command)."""


@dataclass(frozen=True)
class SessionState:
    """A session's registry entry."""

    record: SessionRecord
    worker: str | None
    owner: str | None
    epoch: int
    seq: int
    cursor: str
    audio_bytes: int


class Unreadable(ClusterMessage, tag="unreadable", kw_only=True):
    """A stream entry this process cannot read (a newer process's message type): readers skip it
    by its id instead of failing on it. Never written."""

    raw: bytes


@dataclass(frozen=True)
class StreamEntry:
    """One entry of an input or output stream: its id, message, and (audio) bytes."""

    id: str
    message: ClusterMessage
    pcm: bytes | None = None


class ClusterStore:
    """The Redis operations of control replicas and workers (one instance per process)."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = "roomscribe:") -> None:
        self.redis = client
        self.prefix = prefix
        self._journal = client.register_script(_JOURNAL_SCRIPT)
        self._checkpoint = client.register_script(_CHECKPOINT_SCRIPT)
        self._worker_output = client.register_script(_WORKER_OUTPUT_SCRIPT)
        self._delete = client.register_script(_DELETE_SCRIPT)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "roomscribe:") -> ClusterStore:
        """A store on the Redis at `url` (redis://host:port/db)."""
        client = aioredis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=None, health_check_interval=10)
        return cls(client, prefix=prefix)

    async def close(self) -> None:
        await self.redis.aclose()

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _session_keys(self, session_id: str) -> list[str]:
        return [self._key(name, session_id) for name in ("session", "journal", "in", "out")]

    async def ping(self) -> None:
        """ClusterUnavailable unless Redis answers."""
        try:
            await self.redis.ping()
        except (RedisError, OSError) as exc:
            raise ClusterUnavailable(f"Redis did not answer: {type(exc).__name__}: {exc}") from None

    # -- session registry ---------------------------------------------------------------------------------
    async def create_session(self, record: SessionRecord, *, owner: str, ttl_s: float) -> int:
        """Register a new session owned by `owner`, as the user's current one; returns its epoch (1)."""
        key = self._key("session", record.session_id)
        ttl_ms = _ms(ttl_s)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key, mapping={"record": encode_cluster(record), "owner": owner, "epoch": 1, "seq": 0, "cursor": "0-0", "bytes": 0}
            )
            pipe.pexpire(key, ttl_ms)
            pipe.set(self._key("user", record.user), record.session_id, px=ttl_ms)
            await pipe.execute()
        return 1

    async def session(self, session_id: str) -> SessionState | None:
        """The session's registry entry, or None when there is none (ended, or expired)."""
        data: dict[bytes, bytes] = await _reply(self.redis.hgetall(self._key("session", session_id)))
        if b"record" not in data:
            return None
        record = decode_cluster(data[b"record"])
        if not isinstance(record, SessionRecord):
            return None
        worker = data.get(b"worker")
        owner = data.get(b"owner")
        return SessionState(
            record=record,
            worker=worker.decode() if worker else None,
            owner=owner.decode() if owner else None,
            epoch=int(data.get(b"epoch", b"0")),
            seq=int(data.get(b"seq", b"0")),
            cursor=data.get(b"cursor", b"0-0").decode(),
            audio_bytes=int(data.get(b"bytes", b"0")),
        )

    async def user_session(self, user: str) -> str | None:
        """The id of the user's current session, if any."""
        value = await self.redis.get(self._key("user", user))
        return value.decode() if value else None

    async def take_ownership(self, session_id: str, owner: str) -> int:
        """Make `owner` the session's control replica; returns the new epoch (the old owner is fenced out)."""
        key = self._key("session", session_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, "owner", owner)
            pipe.hincrby(key, "epoch", 1)
            _, epoch = await pipe.execute()
        return int(epoch)

    async def release_ownership(self, session_id: str, epoch: int) -> None:
        """The owner's socket went away: no owner (unless another one took it meanwhile)."""
        key = self._key("session", session_id)
        state = await _reply(self.redis.hget(key, "epoch"))
        if state is not None and int(state) == epoch:
            await _reply(self.redis.hdel(key, "owner"))

    async def set_worker(self, session_id: str, worker_id: str | None) -> None:
        key = self._key("session", session_id)
        if worker_id is None:
            await _reply(self.redis.hdel(key, "worker"))
        else:
            await _reply(self.redis.hset(key, "worker", worker_id))

    async def touch(self, session_id: str, user: str, ttl_s: float) -> bool:
        """Keep every key of the session (and its user's pointer) for `ttl_s` more; False if it is gone."""
        ttl_ms = _ms(ttl_s)
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self._session_keys(session_id):
                pipe.pexpire(key, ttl_ms)
            pipe.pexpire(self._key("user", user), ttl_ms)
            results = await pipe.execute()
        return bool(results[0])

    async def delete_session(self, session_id: str, user: str, *, epoch: int | None = None) -> bool:
        """Forget the session (and the user's pointer to it, unless the user has a newer one); with
        `epoch`, only while that epoch owns it (False: another replica took it over, nothing deleted)."""
        keys = [*self._session_keys(session_id), self._key("user", user)]
        result = await self._delete(keys=keys, args=[session_id, "" if epoch is None else epoch])
        return bool(result)

    # -- control replicas ---------------------------------------------------------------------------------
    async def keep_replica(self, replica_id: str, ttl_s: float) -> None:
        """Say that control replica `replica_id` is alive for `ttl_s` more."""
        await self.redis.set(self._key("replica", replica_id), "1", px=_ms(ttl_s))

    async def replica_alive(self, replica_id: str) -> bool:
        return bool(await self.redis.exists(self._key("replica", replica_id)))

    async def remove_replica(self, replica_id: str) -> None:
        await self.redis.delete(self._key("replica", replica_id))

    # -- journal -----------------------------------------------------------------------------------------
    async def journal_append(
        self, session_id: str, epoch: int, seq: int, message: bytes, *, cursor: str | None, maxlen: int, keep: bool = True
    ) -> bool:
        """Record event `seq` (JSON bytes) as sent if `epoch` still owns the session, with the
        output-stream entry it came from (`cursor`), and keep it for replay when `keep`; False when
        another replica owns the session now."""
        keys = [self._key("session", session_id), self._key("journal", session_id)]
        result = await self._journal(keys=keys, args=[epoch, seq, message, cursor or "", maxlen, int(keep)])
        return bool(result)

    async def journal(self, session_id: str, after_seq: int) -> tuple[list[tuple[int, bytes]], int]:
        """The journaled events after `after_seq`, in order, and the lowest seq still kept (0: none)."""
        entries = await self.redis.xrange(self._key("journal", session_id), min=f"{after_seq + 1}-0", max="+")
        first = await self.redis.xrange(self._key("journal", session_id), min="-", max="+", count=1)
        lowest = int(first[0][0].split(b"-")[0]) if first else 0
        return [(int(entry_id.split(b"-")[0]), fields[b"m"]) for entry_id, fields in entries], lowest

    # -- monitor subscriptions across replicas ---------------------------------------------------------
    def watch_channel(self, user: str) -> str:
        """The pub/sub channel on which every event of `user`'s sessions is published (`Watched`)."""
        return self._key("watch", user)

    async def publish_watched(self, message: Watched) -> None:
        """Publish a session event to the replicas whose monitors watch its user (none listening: a no-op)."""
        await self.redis.publish(self.watch_channel(message.user), encode_cluster(message))

    # -- per-session streams -------------------------------------------------------------------------------
    async def send_input(
        self, session_id: str, message: ClusterMessage, pcm: bytes | None = None, *, audio_bytes: int | None = None
    ) -> str:
        """Append to the session's input stream; with it, `audio_bytes` (the ws audio bytes taken from
        the client so far, what a resume on any replica reports) is recorded in the same transaction."""
        fields: dict[str, bytes] = {"m": encode_cluster(message)}
        if pcm is not None:
            fields["pcm"] = pcm
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self._key("in", session_id), fields, maxlen=INPUT_MAXLEN, approximate=True)  # type: ignore[arg-type]  # redis-py types fields as str-keyed Mapping of str
            if audio_bytes is not None:
                pipe.hset(self._key("session", session_id), "bytes", str(audio_bytes))
            results = await pipe.execute()
        entry_id: bytes = results[0]
        return entry_id.decode()

    async def read_input(
        self, session_id: str, after: str, *, block_ms: int | None = None, count: int = 100
    ) -> list[StreamEntry]:
        """Input entries after `after` (waits up to `block_ms` for one when there is none)."""
        return await self._read(self._key("in", session_id), after, block_ms, count)

    async def send_output(self, session_id: str, message: ClusterMessage) -> str:
        """Append to the session's output stream (worker → control)."""
        entry_id: bytes = await self.redis.xadd(
            self._key("out", session_id), {"m": encode_cluster(message)}, maxlen=STREAM_MAXLEN, approximate=True
        )
        return entry_id.decode()

    async def send_output_as(self, session_id: str, worker_id: str, message: ClusterMessage) -> str | None:
        """Append to the output stream as the session's worker `worker_id`; None (nothing written)
        when the session is gone or another worker runs it now."""
        keys = [self._key("session", session_id), self._key("out", session_id)]
        entry_id: bytes | None = await self._worker_output(keys=keys, args=[worker_id, encode_cluster(message), STREAM_MAXLEN])
        return entry_id.decode() if entry_id else None

    async def read_output(
        self, session_id: str, after: str, *, block_ms: int | None = None, count: int = 100
    ) -> list[StreamEntry]:
        """Output entries after `after` (waits up to `block_ms` for one when there is none)."""
        return await self._read(self._key("out", session_id), after, block_ms, count)

    async def _read(self, key: str, after: str, block_ms: int | None, count: int) -> list[StreamEntry]:
        reply = await self.redis.xread({key: after}, count=count, block=block_ms)
        return [_entry(entry_id, fields) for _, entries in reply for entry_id, fields in entries]

    # -- takeover -----------------------------------------------------------------------------------------
    async def set_checkpoint(self, session_id: str, worker_id: str, checkpoint: Checkpoint) -> bool:
        """Record the session's resume point, as its worker `worker_id`; False (nothing written) when
        the session is gone or another worker runs it now."""
        keys = [self._key("session", session_id), self._key("in", session_id)]
        args: list[str | bytes] = [worker_id, encode_cluster(checkpoint), checkpoint.input_id]
        return bool(await self._checkpoint(keys=keys, args=args))

    async def checkpoint(self, session_id: str) -> Checkpoint | None:
        """The session's last resume point (None: none yet, or no session)."""
        raw = await _reply(self.redis.hget(self._key("session", session_id), "checkpoint"))
        if raw is None:
            return None
        checkpoint = decode_cluster(raw)
        return checkpoint if isinstance(checkpoint, Checkpoint) else None

    async def takeover_job(self, session_id: str) -> SessionJob:
        """The job that runs the session on from its checkpoint (from the start when it has none):
        what a control replica sends a replacement worker."""
        checkpoint = await self.checkpoint(session_id)
        if checkpoint is None:
            return SessionJob(session_id=session_id, takeover=True)
        return SessionJob(
            session_id=session_id,
            takeover=True,
            input_after=checkpoint.input_id,
            audio_s=checkpoint.audio_s,
            first_utterance=checkpoint.next_utterance,
        )

    # -- workers ---------------------------------------------------------------------------------------
    async def heartbeat(self, state: WorkerState) -> None:
        await _reply(self.redis.hset(self._key("workers"), state.worker_id, encode_cluster(state).decode()))

    async def workers(self) -> list[WorkerState]:
        """Every worker's last heartbeat (dead ones included: see control.dispatch)."""
        data: dict[bytes, bytes] = await _reply(self.redis.hgetall(self._key("workers")))
        states = []
        for raw in data.values():
            try:
                state = decode_cluster(raw)
            except (msgspec.ValidationError, msgspec.DecodeError):
                continue  # a newer worker's state this process cannot read: not a candidate
            if isinstance(state, WorkerState):
                states.append(state)
        return states

    async def remove_worker(self, worker_id: str) -> None:
        await _reply(self.redis.hdel(self._key("workers"), worker_id))

    async def send_job(self, worker_id: str, job: SessionJob) -> None:
        await self.redis.xadd(self._key("jobs", worker_id), {"m": encode_cluster(job)}, maxlen=STREAM_MAXLEN, approximate=True)

    async def read_jobs(self, worker_id: str, after: str, *, block_ms: int | None = None) -> list[StreamEntry]:
        return await self._read(self._key("jobs", worker_id), after, block_ms, 100)

    async def last_job_id(self, worker_id: str) -> str:
        """The newest entry of the worker's job stream ("0-0": none), where a starting worker begins."""
        info: Sequence[Any] = await self.redis.xrevrange(self._key("jobs", worker_id), count=1)
        return info[0][0].decode() if info else "0-0"


def _entry(entry_id: bytes, fields: dict[bytes, bytes]) -> StreamEntry:
    raw = fields.get(b"m", b"")
    try:
        message = decode_cluster(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        message = Unreadable(raw=raw)
    return StreamEntry(id=entry_id.decode(), message=message, pcm=fields.get(b"pcm"))


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
