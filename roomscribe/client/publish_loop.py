"""The one LiveKit publish loop: PCM16 into an `rtc.AudioSource`, led in by 10 ms silence frames.

Audio published before the agent has subscribed is not heard (as with any LiveKit server), so a
file or a benchmark starts with silence until it is told to speak (a future or an event: the
server's `status {code: "listening"}`, or a line on a test subprocess's stdin), for at least
`min_s` and at most `max_s`. The SDK paces capture in real time. `LiveKitPublisher`,
`bench.livekit_transport` and the tests' publisher subprocess all publish through `PublishLoop`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, Iterable, Iterator

import numpy as np
from livekit import rtc

#: Every silence frame of the lead-in lasts this long (and `ten_ms_frames` cuts audio to it).
FRAME_MS = 10
#: Opus bitrate of a published microphone: the recogniser hears quiet consonants better than at the SDK's default.
OPUS_BITRATE = 64_000

#: What tells the loop to end the lead-in: done (a future) or set (an event); None: at once.
SpeakSignal = asyncio.Future[object] | asyncio.Event | None


def spoken(signal: SpeakSignal) -> bool:
    """True once `signal` says speak (always true without a signal)."""
    if signal is None:
        return True
    if isinstance(signal, asyncio.Event):
        return signal.is_set()
    return signal.done()


def ten_ms_frames(samples: np.ndarray, sample_rate: int, channels: int = 1) -> Iterator[bytes]:
    """Interleaved int16 `samples` as whole 10 ms frames of PCM16 (a last partial frame is left out)."""
    data = np.asarray(samples).astype(np.int16, copy=False).reshape(-1)
    step = sample_rate * FRAME_MS // 1000 * channels
    for start in range(0, len(data) - step + 1, step):
        yield data[start : start + step].tobytes()


class PublishLoop:
    """An `rtc.AudioSource` and its microphone track; `lead_in` then `capture` (or `run` for both).

    `frames_captured` counts the audio frames captured (not the lead-in's silence); `lead_in_s` is
    how long the last lead-in lasted and `heard` whether it ended on the speak signal."""

    def __init__(
        self, sample_rate: int, channels: int = 1, *, queue_size_ms: int, track_name: str = "microphone"
    ) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self.source = rtc.AudioSource(sample_rate, channels, queue_size_ms=queue_size_ms)
        self.track = rtc.LocalAudioTrack.create_audio_track(track_name, self.source)
        self.frames_captured = 0
        self.lead_in_s = 0.0
        self.heard = False

    async def publish_to(self, room: rtc.Room) -> rtc.LocalTrackPublication:
        """Publish the track into `room` as its participant's microphone."""
        return await room.local_participant.publish_track(
            self.track, _options()
        )

    async def lead_in(self, speak: SpeakSignal = None, *, min_s: float = 0.0, max_s: float) -> float:
        """Capture 10 ms silence frames until `speak` (after at least `min_s`) or `max_s`; its length in s."""
        samples = self.sample_rate * FRAME_MS // 1000
        silence = rtc.AudioFrame(bytes(samples * self.channels * 2), self.sample_rate, self.channels, samples)
        began = time.monotonic()
        while time.monotonic() - began < max_s and (time.monotonic() - began < min_s or not spoken(speak)):
            await self.source.capture_frame(silence)
        self.lead_in_s = time.monotonic() - began
        self.heard = spoken(speak) and speak is not None
        return self.lead_in_s

    async def capture(self, pcm: bytes) -> None:
        """Capture one chunk of interleaved PCM16 (any whole number of samples per channel)."""
        samples = len(pcm) // (2 * self.channels)
        await self.source.capture_frame(rtc.AudioFrame(pcm, self.sample_rate, self.channels, samples))
        self.frames_captured += 1

    async def run(
        self,
        chunks: AsyncIterable[bytes] | Iterable[bytes],
        speak: SpeakSignal = None,
        *,
        lead_in_min_s: float = 0.0,
        lead_in_max_s: float = 0.0,
    ) -> None:
        """The whole loop: lead-in silence, every chunk, then wait until the SDK has played it out."""
        await self.lead_in(speak, min_s=lead_in_min_s, max_s=lead_in_max_s)
        if isinstance(chunks, AsyncIterable):
            async for chunk in chunks:
                await self.capture(chunk)
        else:
            for chunk in chunks:
                await self.capture(chunk)
        await self.source.wait_for_playout()

    async def wait_for_playout(self) -> None:
        await self.source.wait_for_playout()

    async def aclose(self) -> None:
        await self.source.aclose()


def _options() -> rtc.TrackPublishOptions:
    """A microphone for a recogniser: Opus at OPUS_BITRATE with no DTX, so quiet consonants and the
    syllable after a pause arrive as they were spoken (measured: the SDK's default bitrate turned
    JFK's "Ask not" into "As not" in 2 of 5 demo runs, 64 kb/s in none of 4)."""
    opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE, dtx=False)
    opts.audio_encoding.max_bitrate = OPUS_BITRATE
    return opts
