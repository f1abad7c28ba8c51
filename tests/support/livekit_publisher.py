"""Publish a WAV file as a participant's microphone with the official `livekit` SDK (for tests)."""

from __future__ import annotations

import numpy as np
from livekit import rtc

from client.audio_files import read_wav


async def connect_and_publish_wav(url: str, token: str, path, *, tail_silence_s: float = 1.0) -> rtc.Room:  # type: ignore[no-untyped-def]
    """Join, publish `path` as the microphone in 10 ms frames (paced by the SDK), return the room."""
    audio = read_wav(path)
    room = rtc.Room()
    await room.connect(url, token, rtc.RoomOptions(auto_subscribe=False))
    await publish_samples(room, audio.samples, audio.sample_rate, audio.channels, tail_silence_s=tail_silence_s)
    return room


async def publish_samples(
    room: rtc.Room,
    samples: np.ndarray,
    sample_rate: int,
    channels: int = 1,
    *,
    tail_silence_s: float = 1.0,
    queue_size_ms: int = 400,
) -> rtc.LocalTrackPublication:
    """Publish samples as a microphone track. The queue is generous by default: these tests check
    what is heard, not latency, and a 20 ms queue underruns (gaps in the audio) whenever the shared
    event loop stalls on a loaded machine."""
    source = rtc.AudioSource(sample_rate, channels, queue_size_ms=queue_size_ms)
    track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
    publication = await room.local_participant.publish_track(
        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    )
    step = sample_rate // 100 * channels
    padded = np.concatenate([samples, np.zeros(int(tail_silence_s * sample_rate) * channels, dtype=np.int16)])
    for start in range(0, len(padded) - step + 1, step):
        chunk = padded[start : start + step]
        frame = rtc.AudioFrame(chunk.tobytes(), sample_rate, channels, step // channels)
        await source.capture_frame(frame)
    await source.wait_for_playout()
    return publication
