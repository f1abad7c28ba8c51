"""Media fan-out: one publisher's track relayed to many subscriber tracks.

Audio is forwarded as the publisher's own Opus packets, as a LiveKit server (an SFU) does:
`OpusPassThrough` takes each packet from aiortc's receiver as it arrives and the subscribers'
senders packetise it unchanged. Nothing is decoded and coded a second time (which cost a
recogniser quiet consonants, CPU, and the timing regularity of a decoder thread and an encoder
thread pool). Video (and audio with the pass-through off) is decoded once and re-encoded by
every subscriber's sender. The publisher's track is always drained, subscribers get bounded
queues (a slow subscriber loses old frames instead of adding latency).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from fractions import Fraction

import aiortc.rtp
import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.utils import uint16_add

log = logging.getLogger("roomscribe.devserver.relay")

QUEUE_FRAMES = 5  # 100 ms of 20 ms audio frames


class RelayedTrack(MediaStreamTrack):
    """A subscriber's copy of a published track, fed by :class:`TrackRelay`."""

    def __init__(self, kind: str, track_id: str) -> None:
        super().__init__()
        self.kind = kind
        self._id = track_id
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=QUEUE_FRAMES)
        self.dropped = 0

    def push(self, frame: object | None) -> None:
        """Queue a frame (``None`` ends the track), dropping the oldest when full."""
        while self._queue.full():
            try:
                self._queue.get_nowait()
                self.dropped += 1
            except asyncio.QueueEmpty:  # pragma: no cover - race-free in one loop
                break
        self._queue.put_nowait(frame)

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self._queue.get()
        if frame is None:
            self.stop()
            raise MediaStreamError
        return frame


class TrackRelay:
    """Reads a publisher's remote track forever and copies each frame to its subscribers."""

    def __init__(self, source: MediaStreamTrack, track_sid: str = "", packets: OpusPassThrough | None = None) -> None:
        """With `packets`, the publisher's Opus packets are what is relayed (the source track then
        yields nothing; it is still read, to learn when it ends)."""
        self.source = source
        self.track_sid = track_sid
        self.kind = source.kind
        self.outputs: dict[str, RelayedTrack] = {}
        self.frames = 0
        self.last_frame_at = 0.0
        if packets is not None:
            packets.sink = self._fan_out
        self._task = asyncio.ensure_future(self._pump())

    def add_output(self, key: str) -> RelayedTrack:
        """A new subscriber track (``key`` identifies the subscriber)."""
        self.remove_output(key)
        out = RelayedTrack(self.kind, self.track_sid or self.source.id)
        self.outputs[key] = out
        return out

    def remove_output(self, key: str) -> None:
        out = self.outputs.pop(key, None)
        if out is not None:
            out.push(None)

    async def _pump(self) -> None:
        try:
            while True:
                self._fan_out(await self.source.recv())
        except MediaStreamError:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:  # pragma: no cover - logged for diagnosis
            log.exception("relay of %s failed", self.track_sid)
        finally:
            for key in list(self.outputs):
                self.remove_output(key)

    def _fan_out(self, frame: object) -> None:
        self.frames += 1
        self.last_frame_at = time.monotonic()
        for out in list(self.outputs.values()):
            out.push(frame)

    def stop(self) -> None:
        """Stop reading the publisher and end every subscriber track."""
        self._task.cancel()
        for key in list(self.outputs):
            self.remove_output(key)


#: Opus RTP timestamps count 48 kHz samples whatever the audio's own rate (RFC 7587).
OPUS_TIME_BASE = Fraction(1, 48000)


class OpusPassThrough:
    """Replaces aiortc's audio jitter buffer for Opus: each packet goes to `sink` the moment it
    arrives, as an `av.Packet` that aiortc's senders packetise without re-encoding (its `pts` is
    the RTP timestamp, unwrapped). Late or duplicate packets are dropped (the subscriber's own
    jitter buffer conceals the gap). Nothing reaches aiortc's decoder. Same `add()` contract."""

    def __init__(self) -> None:
        self.sink: Callable[[av.Packet], None] | None = None  # packets before a sink is set are dropped
        self._last_seq: int | None = None
        self._last_ts: int | None = None
        self._pts = 0

    def add(self, packet: aiortc.rtp.RtpPacket) -> tuple[bool, None]:
        seq = packet.sequence_number
        if self._last_seq is not None:
            ahead = uint16_add(seq, -self._last_seq)
            if ahead == 0 or ahead >= 0x8000:  # duplicate or older than what we already sent
                return False, None
        self._last_seq = seq
        if self._last_ts is not None:
            step = (packet.timestamp - self._last_ts) & 0xFFFFFFFF
            self._pts += step if step < 0x80000000 else step - 0x100000000
        self._last_ts = packet.timestamp
        if self.sink is not None and packet.payload:  # an empty payload is padding
            out = av.Packet(packet.payload)
            out.pts = self._pts
            out.time_base = OPUS_TIME_BASE
            self.sink(out)
        return False, None


def use_opus_pass_through(receiver: object) -> OpusPassThrough | None:
    """Install `OpusPassThrough` on an aiortc audio receiver (a private attribute); None for video."""
    attr = "_RTCRtpReceiver__jitter_buffer"
    if getattr(receiver, "_RTCRtpReceiver__kind", None) != "audio" or not hasattr(receiver, attr):
        return None
    pass_through = OpusPassThrough()
    setattr(receiver, attr, pass_through)
    return pass_through


_MAX = 32767.0
aiortc_audio_level_dbov = aiortc.rtp.compute_audio_level_dbov  # the original, for comparison


def audio_level_dbov(frame) -> int:
    """RFC 6465 level exactly as aiortc computes it, with numpy instead of a Python loop."""
    buf = np.frombuffer(bytes(frame.planes[0]), dtype=np.int16).astype(np.float64)
    rms = math.sqrt(float(np.dot(buf, buf)) / (frame.samples * _MAX * _MAX)) if frame.samples else 0.0
    if rms > 0:
        db = min(max(20 * math.log10(rms), -127), 0)
    else:
        db = -127
    return round(db)


def install_fast_audio_level() -> None:
    """Replace aiortc's per-sample loop (same result, ~40x cheaper per 20 ms frame)."""
    if getattr(aiortc.rtp.compute_audio_level_dbov, "__name__", "") != "audio_level_dbov":
        aiortc.rtp.compute_audio_level_dbov = audio_level_dbov
