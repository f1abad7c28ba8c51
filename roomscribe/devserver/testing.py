"""Helpers for tests that run against a :class:`~devserver.DevServer` (used by several suites)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import math
import socket
from typing import AsyncIterator, Callable

import numpy as np

from .app import DEFAULT_KEYS, DevServer


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def make_token(identity: str, room: str, *, key: str = "devkey", secret: str = "secret",
               name: str | None = None, ttl_s: float = 3600, **grants: object) -> str:
    """A join token; ``grants`` override VideoGrants fields (``can_subscribe=False`` ...)."""
    from livekit import api

    grants.setdefault("room_join", True)
    video = api.VideoGrants(room=room, **grants)  # type: ignore[arg-type]
    return (api.AccessToken(key, secret).with_identity(identity).with_name(name or identity)
            .with_grants(video).with_ttl(datetime.timedelta(seconds=ttl_s)).to_jwt())


@contextlib.asynccontextmanager
async def running_devserver(**options: object) -> AsyncIterator[DevServer]:
    """``async with running_devserver() as srv:`` a server on a free loopback port."""
    options.setdefault("keys", dict(DEFAULT_KEYS))
    srv = DevServer(host="127.0.0.1", port=0, **options)  # type: ignore[arg-type]
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def tone(freq_hz: float, n: int, rate: int, amplitude: float = 0.5, start: int = 0) -> np.ndarray:
    """``n`` int16 samples of a sine starting at sample ``start``."""
    t = (np.arange(n) + start) / rate
    return (np.sin(2 * math.pi * freq_hz * t) * amplitude * 32767).astype(np.int16)


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


async def publish_tone(room: object, freq_hz: float = 440.0, *, amplitude: float = 0.5,
                       rate: int = 48000, queue_size_ms: int = 200, name: str = "tone",
                       stop: asyncio.Event | None = None) -> None:
    """Publish a microphone track playing a sine until cancelled or ``stop`` is set.

    The 200 ms source queue absorbs event-loop stalls of the publishing process (an in-process
    server shares its GIL); a stall longer than the queue becomes silence at the receiver.
    Latency measurements use ``queue_size_ms=20`` (see ``bench/devserver_latency.py``).
    """
    from livekit import rtc

    source = rtc.AudioSource(rate, 1, queue_size_ms=queue_size_ms)
    track = rtc.LocalAudioTrack.create_audio_track(name, source)
    opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    await room.local_participant.publish_track(track, opts)  # type: ignore[attr-defined]
    spf = rate // 100
    pos = 0
    try:
        while stop is None or not stop.is_set():
            frame = rtc.AudioFrame(tone(freq_hz, spf, rate, amplitude, pos).tobytes(), rate, 1, spf)
            await source.capture_frame(frame)
            pos += spf
    finally:
        await source.aclose()


async def collect_audio(track: object, seconds: float, *, rate: int = 48000,
                        skip_s: float = 0.5) -> np.ndarray:
    """Mono int16 samples from a remote audio track, after skipping the first ``skip_s``."""
    from livekit import rtc

    stream = rtc.AudioStream(track, sample_rate=rate, num_channels=1)  # type: ignore[arg-type]
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


def wait_event(emitter: object, event: str, predicate: Callable[..., bool] = lambda *a: True
               ) -> "asyncio.Future[tuple]":
    """A future resolved with the args of the first ``event`` (matching ``predicate``)."""
    fut: asyncio.Future[tuple] = asyncio.get_running_loop().create_future()

    def _handler(*args: object) -> None:
        if not fut.done() and predicate(*args):
            fut.set_result(args)

    emitter.on(event, _handler)  # type: ignore[attr-defined]
    return fut
