"""Helpers for tests that run against a :class:`~roomscribe.devserver.DevServer` (used by several suites).

Test support, so it is not shipped in the wheel. ``make_token`` and ``tone`` live in the package
(``roomscribe.devserver.auth.mint_join_token``, ``roomscribe.bench.signals``) because the
dev-server latency bench uses them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from roomscribe.bench.signals import tone
from roomscribe.devserver import DEFAULT_KEYS, DevServer
from roomscribe.devserver.auth import mint_join_token as make_token

if TYPE_CHECKING:
    from livekit import rtc

__all__ = ["collect_audio", "make_token", "peak_hz", "publish_tone", "rms_dbfs",
           "running_devserver", "tone", "wait_event"]


@contextlib.asynccontextmanager
async def running_devserver(**options: Any) -> AsyncIterator[DevServer]:
    """``async with running_devserver() as srv:`` a server on a free loopback port."""
    options.setdefault("keys", dict(DEFAULT_KEYS))
    srv = DevServer(host="127.0.0.1", port=0, **options)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def peak_hz(samples: np.ndarray, rate: int) -> float:
    """Frequency of the strongest FFT bin (Hann window)."""
    x = samples.astype(np.float64) * np.hanning(len(samples))
    spec = np.abs(np.fft.rfft(x))
    spec[0] = 0
    return float(np.argmax(spec) * rate / len(samples))


def rms_dbfs(samples: np.ndarray) -> float:
    """RMS level of int16 samples in dBFS."""
    x = samples.astype(np.float64) / 32768.0
    return 20 * math.log10(max(math.sqrt(float(np.mean(x * x))), 1e-9))


async def publish_tone(room: rtc.Room, freq_hz: float = 440.0, *, amplitude: float = 0.5,
                       rate: int = 48000, queue_size_ms: int = 200, name: str = "tone",
                       stop: asyncio.Event | None = None) -> None:
    """Publish a microphone track playing a sine until cancelled or ``stop`` is set.

    The 200 ms source queue absorbs event-loop stalls of the publishing process (an in-process
    server shares its GIL); a stall longer than the queue becomes silence at the receiver.
    Latency measurements use ``queue_size_ms=20`` (see ``roomscribe/bench/devserver_latency.py``).
    """
    from livekit import rtc

    source = rtc.AudioSource(rate, 1, queue_size_ms=queue_size_ms)
    track = rtc.LocalAudioTrack.create_audio_track(name, source)
    opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    await room.local_participant.publish_track(track, opts)
    spf = rate // 100
    pos = 0
    try:
        while stop is None or not stop.is_set():
            frame = rtc.AudioFrame(tone(freq_hz, spf, rate, amplitude, pos).tobytes(), rate, 1, spf)
            await source.capture_frame(frame)
            pos += spf
    finally:
        await source.aclose()


async def collect_audio(track: rtc.Track, seconds: float, *, rate: int = 48000,
                        skip_s: float = 0.5) -> np.ndarray:
    """Mono int16 samples from a remote audio track, after skipping the first ``skip_s``."""
    from livekit import rtc

    stream = rtc.AudioStream(track, sample_rate=rate, num_channels=1)
    want = int(seconds * rate)
    skip = int(skip_s * rate)
    chunks: list[np.ndarray] = []
    got = 0
    try:
        async for ev in stream:
            data = np.frombuffer(ev.frame.data, dtype=np.int16)
            if skip > 0:
                skip -= len(data)
                continue
            chunks.append(data.copy())
            got += len(data)
            if got >= want:
                break
    finally:
        await stream.aclose()
    return np.concatenate(chunks)[:want] if chunks else np.zeros(0, dtype=np.int16)


def wait_event(emitter: Any, event: str, predicate: Callable[..., bool] = lambda *a: True
               ) -> asyncio.Future[tuple]:
    """A future resolved with the args of the first ``event`` (matching ``predicate``)."""
    fut: asyncio.Future[tuple] = asyncio.get_running_loop().create_future()

    def _handler(*args: object) -> None:
        if not fut.done() and predicate(*args):
            fut.set_result(args)

    emitter.on(event, _handler)
    return fut
