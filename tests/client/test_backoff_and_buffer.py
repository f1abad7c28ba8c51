"""Fast unit tests: reconnect delays, the bounded audio buffer, typed events and seq dedupe."""

from __future__ import annotations

import asyncio
import random

import pytest

from roomscribe.client.audio_buffer import AudioBuffer
from roomscribe.client.control_client import ControlClient
from roomscribe.client.events import ClientNotice, FinalTranscript, SessionReady, Unknown, parse_event
from roomscribe.client.hub import EventHub
from roomscribe.common.backoff import Backoff

pytestmark = pytest.mark.timeout(10)


# -- backoff ------------------------------------------------------------------------------------------
def test_backoff_doubles_up_to_the_cap() -> None:
    backoff = Backoff(base_s=0.1, cap_s=1.0, jitter=0.0)
    assert [backoff.delay(n) for n in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert backoff.ceiling(1000) == 1.0  # no overflow for huge attempt numbers


def test_backoff_jitter_stays_within_its_band_and_spreads() -> None:
    backoff = Backoff(base_s=1.0, cap_s=8.0, jitter=0.5, rng=random.Random(42))
    delays = [backoff.delay(3) for _ in range(500)]
    assert all(4.0 <= d <= 8.0 for d in delays)
    assert max(delays) - min(delays) > 3.0, "jitter should spread clients out"
    full = Backoff(base_s=1.0, cap_s=8.0, jitter=1.0, rng=random.Random(1))
    assert min(full.delay(3) for _ in range(500)) < 0.5


def test_backoff_attempt_limit_and_validation() -> None:
    assert Backoff(attempts=3).allows(2) and not Backoff(attempts=3).allows(3)
    assert Backoff(attempts=None).allows(10**6)
    for bad in ({"base_s": 0}, {"base_s": 2.0, "cap_s": 1.0}, {"jitter": 1.5}, {"attempts": -1}):
        with pytest.raises(ValueError):
            Backoff(**bad)


# -- audio buffer ---------------------------------------------------------------------------------------
def frames(n: int, size: int = 4) -> list[bytes]:
    return [bytes([i]) * size for i in range(n)]


def test_buffer_drops_the_oldest_audio_first_and_counts_it() -> None:
    buffer = AudioBuffer(max_bytes=12)
    for frame in frames(5):
        buffer.push(frame)
    assert buffer.dropped_frames == 2 and buffer.dropped_bytes == 8
    assert [buffer.next_frame() for _ in range(3)] == frames(5)[2:]
    assert buffer.next_frame() is None


def test_buffer_acknowledges_by_ping_mark_and_rewinds_the_rest_in_order() -> None:
    buffer = AudioBuffer(max_bytes=100)
    for frame in frames(6):
        buffer.push(frame)
    sent = [buffer.next_frame() for _ in range(4)]  # frames 0-3 on the wire
    mark = buffer.mark()  # a ping after frame 1 would have mark 2; this one is after frame 3
    buffer.ack(2)  # the pong of a ping sent after frames 0 and 1
    assert buffer.in_flight_frames == 2 and buffer.pending_frames == 2
    assert buffer.rewind() == 2  # the link dropped: frames 2 and 3 are unconfirmed
    assert [buffer.next_frame() for _ in range(4)] == frames(6)[2:]
    assert sent == frames(6)[:4] and mark == 4
    assert buffer.in_flight_bytes == 16
    buffer.ack(buffer.mark())
    assert buffer.buffered_bytes == 0 and buffer.in_flight_bytes == 0 and buffer.dropped_frames == 0


def test_buffer_limit_counts_unconfirmed_audio_but_does_not_call_it_dropped() -> None:
    buffer = AudioBuffer(max_bytes=8)
    buffer.push(b"aaaa")
    buffer.push(b"bbbb")
    assert buffer.next_frame() == b"aaaa"  # sent, not yet confirmed
    buffer.push(b"cccc")  # over the limit: the unconfirmed frame is forgotten first
    assert buffer.dropped_frames == 0 and buffer.in_flight_frames == 0
    buffer.push(b"dddd")  # now unsent audio has to go
    assert buffer.dropped_frames == 1 and buffer.next_frame() == b"cccc"


def test_buffer_rewind_then_overflow_drops_the_oldest_rewound_audio() -> None:
    buffer = AudioBuffer(max_bytes=8)
    buffer.push(b"aaaa")
    buffer.next_frame()
    buffer.rewind()
    buffer.push(b"bbbb")
    buffer.push(b"cccc")
    assert buffer.dropped_frames == 1 and buffer.next_frame() == b"bbbb"


# -- events and dedupe ------------------------------------------------------------------------------
def test_buffer_skips_rewound_audio_the_server_already_read() -> None:
    buffer = AudioBuffer(max_bytes=1000)
    for i in range(5):
        buffer.push(bytes([i]) * 10)
    for _ in range(4):
        buffer.next_frame()
    buffer.ack(buffer.mark() - 2)  # frames 0 and 1 confirmed; 2 and 3 in flight
    assert buffer.rewind() == 2 and buffer.offset == 20
    # The server had read frame 2 (30 bytes) before the link dropped, not frame 3.
    assert buffer.skip_received(30) == 1
    assert buffer.next_frame() == bytes([3]) * 10 and buffer.next_frame() == bytes([4]) * 10
    assert buffer.offset == 50
    assert buffer.skip_received(10) == 0  # never skips audio the server does not have


READY = {"type": "session.ready", "session_id": "s_1", "transport": "ws", "protocol": 1, "room": "r", "resumed": False,
         "last_seq": 0}


def test_parse_event_is_typed_keeps_raw_and_tolerates_unknowns() -> None:
    raw = {"type": "transcript.final", "seq": 4, "utterance_id": "u1", "text": "hi", "start": 0.1, "end": 0.9,
           "reason": "silence", "new_field": 1}
    event = parse_event(raw)
    assert isinstance(event, FinalTranscript) and event.text == "hi" and event.seq == 4 and event.raw is raw
    assert event.subscription_id is None
    assert isinstance(parse_event({"type": "something.new", "x": 1}), Unknown)
    ready = parse_event({**READY, "resumed": True, "last_seq": 7, "audio": {}, "audio_bytes_received": 640})
    assert isinstance(ready, SessionReady) and ready.resumed and ready.last_seq == 7
    assert ready.audio is not None and ready.audio.sample_rate == 16000 and ready.audio_bytes_received == 640
    # A known type without the fields the server always sends is not trusted as that type.
    broken = parse_event({"type": "transcript.final", "text": "a"})
    assert isinstance(broken, Unknown) and broken.error is not None and "utterance_id" in broken.error
    assert broken.raw == {"type": "transcript.final", "text": "a"}


async def test_events_are_delivered_once_in_seq_order_per_session() -> None:
    client = ControlClient("ws://unused", "token")
    got: list[int] = []
    client.on(lambda e: got.append(e.seq) if e.seq else None)
    final = {"type": "transcript.final", "utterance_id": "u", "text": "x", "start": 0, "end": 1, "reason": "silence"}
    client._on_message(READY)
    for seq in (1, 2, 3, 2, 3, 4):  # 2 and 3 replayed after a resume
        client._on_message({**final, "seq": seq})
    # forwarded events are deduplicated per watched session, independently
    for seq in (1, 1, 2):
        client._on_message({**final, "seq": seq, "subscription_id": "sub_1", "session_id": "s_9", "user": "bob"})
    assert got == [1, 2, 3, 4, 1, 2] and client.stats.duplicates_dropped == 3
    client._on_message({**READY, "session_id": "s_2"})
    client._on_message({**final, "seq": 1})  # a new session numbers from 1 again
    assert got[-1] == 1 and client.session_id == "s_2"


async def test_hub_feeds_callbacks_and_iterators_until_closed() -> None:
    hub = EventHub()
    by_callback: list[str] = []
    hub.on(lambda e: by_callback.append(e.type), ("transcript.final",))
    stream = hub.stream()
    first = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0)
    hub.publish(parse_event({"type": "transcript.final", "seq": 1, "utterance_id": "u", "text": "a", "start": 0.0,
                             "end": 1.0, "reason": "silence"}))
    hub.publish(ClientNotice(code="x"))
    hub.close()
    assert (await first).type == "transcript.final"
    assert [e.type async for e in stream] == ["client.notice"]
    assert by_callback == ["transcript.final"]
