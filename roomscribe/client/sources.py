"""Audio sources as paced async streams of PCM16 chunks: a WAV file, a numpy array, the microphone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from roomscribe.client.audio_files import read_wav


class MicrophoneUnavailable(RuntimeError):
    """The optional `sounddevice` package (extra `mic`) is missing, or no input device works."""


@dataclass
class PcmStream:
    """Interleaved little-endian PCM16 chunks of a known format; `live` sources cannot wait."""

    chunks: AsyncIterator[bytes]
    sample_rate: int
    channels: int
    live: bool = False


async def paced(frames: Iterable[bytes], frame_s: float, speed: float) -> AsyncIterator[bytes]:
    """Yield `frames` at `speed`× real time (0: as fast as the consumer takes them)."""
    started = time.monotonic()
    sent_s = 0.0
    for frame in frames:
        yield frame
        sent_s += frame_s
        if speed > 0:
            delay = started + sent_s / speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        else:
            await asyncio.sleep(0)


def numpy_stream(
    samples: np.ndarray,
    sample_rate: int,
    *,
    channels: int = 1,
    speed: float = 1.0,
    frame_ms: int = 20,
    tail_silence_s: float = 0.0,
) -> PcmStream:
    """Stream int16 samples (interleaved if `channels` > 1; float arrays in [-1, 1] are converted)."""
    data = np.asarray(samples)
    if data.dtype.kind == "f":
        data = (np.clip(data, -1.0, 1.0) * 32767).astype(np.int16)
    data = data.astype("<i2", copy=False).reshape(-1)
    tail = np.zeros(int(tail_silence_s * sample_rate) * channels, dtype="<i2")
    data = np.concatenate([data, tail])
    step = sample_rate * frame_ms // 1000 * channels
    frames = (data[i : i + step].tobytes() for i in range(0, len(data), step))
    return PcmStream(paced(frames, frame_ms / 1000, speed), sample_rate, channels)


def wav_stream(path: str | Path, *, speed: float = 1.0, frame_ms: int = 20, tail_silence_s: float = 0.0) -> PcmStream:
    """Stream a 16-bit PCM WAV file (any rate, mono or stereo) at `speed`× real time."""
    audio = read_wav(path)
    return numpy_stream(
        audio.samples, audio.sample_rate, channels=audio.channels, speed=speed, frame_ms=frame_ms,
        tail_silence_s=tail_silence_s,
    )


def microphone_stream(sample_rate: int = 16000, channels: int = 1, frame_ms: int = 20) -> PcmStream:
    """Capture the default input device with `sounddevice` (install the `mic` extra)."""
    try:
        import sounddevice  # noqa: F401  (optional dependency, imported only when used)
    except (ImportError, OSError) as error:
        raise MicrophoneUnavailable(
            "microphone capture needs the optional 'sounddevice' package and PortAudio: "
            "pip install 'roomscribe[mic]' (Debian/Ubuntu also: apt-get install libportaudio2)"
            f" [{type(error).__name__}: {error}]"
        ) from None
    return PcmStream(_capture(sample_rate, channels, frame_ms), sample_rate, channels, live=True)


async def _capture(sample_rate: int, channels: int, frame_ms: int) -> AsyncIterator[bytes]:
    import sounddevice

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    def on_audio(indata, frames, time_info, status) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, bytes(indata))

    try:
        stream = sounddevice.RawInputStream(
            samplerate=sample_rate, channels=channels, dtype="int16",
            blocksize=sample_rate * frame_ms // 1000, callback=on_audio,
        )
    except Exception as error:  # PortAudio raises its own error types
        raise MicrophoneUnavailable(f"could not open the microphone: {error}") from None
    with stream:
        while True:
            yield await queue.get()
