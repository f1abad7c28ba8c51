"""Media fan-out: one publisher's decoded track relayed to many subscriber tracks.

aiortc cannot forward RTP, so each published track is decoded once and every subscriber's
sender re-encodes it. The publisher's track is always drained, subscribers get bounded queues
(a slow subscriber loses old frames instead of adding latency).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

import aiortc.rtp
import numpy as np
from aiortc.jitterbuffer import JitterFrame
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

    def __init__(self, source: MediaStreamTrack, track_sid: str = "") -> None:
        self.source = source
        self.track_sid = track_sid
        self.kind = source.kind
        self.outputs: dict[str, RelayedTrack] = {}
        self.frames = 0
        self.last_frame_at = 0.0
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
                frame = await self.source.recv()
                self.frames += 1
                self.last_frame_at = time.monotonic()
                for out in list(self.outputs.values()):
                    out.push(frame)
        except MediaStreamError:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:  # pragma: no cover - logged for diagnosis
            log.exception("relay of %s failed", self.track_sid)
        finally:
            for key in list(self.outputs):
                self.remove_output(key)

    def stop(self) -> None:
        """Stop reading the publisher and end every subscriber track."""
        self._task.cancel()
        for key in list(self.outputs):
            self.remove_output(key)


class ImmediateAudioBuffer:
    """Replaces aiortc's audio jitter buffer (which holds 4 frames, ~80 ms) for Opus.

    Each Opus RTP packet is a whole frame, so it is handed to the decoder at once; late or
    duplicate packets are dropped (the decoder conceals the gap). Same ``add()`` contract.
    """

    def __init__(self) -> None:
        self._last: int | None = None

    def add(self, packet) -> tuple[bool, JitterFrame | None]:
        seq = packet.sequence_number
        if self._last is not None:
            ahead = uint16_add(seq, -self._last)
            if ahead == 0 or ahead >= 0x8000:  # duplicate or older than what we already sent
                return False, None
        self._last = seq
        return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)


def use_immediate_audio_buffer(receiver) -> bool:
    """Install :class:`ImmediateAudioBuffer` on an aiortc audio receiver (private attribute)."""
    attr = "_RTCRtpReceiver__jitter_buffer"
    if getattr(receiver, "_RTCRtpReceiver__kind", None) != "audio" or not hasattr(receiver, attr):
        return False
    setattr(receiver, attr, ImmediateAudioBuffer())
    return True


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
