"""Publish a WAV file as a participant's microphone with the official `livekit` SDK (for tests).

Publishing runs in its own process, as a real client's would: a publisher sharing the server's
event loop underruns its real-time audio queue whenever that loop stalls on a loaded machine.

    python livekit_publisher.py URL TOKEN WAV [--tail-silence S] [--linger S] [--queue-ms N]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import numpy as np
from livekit import rtc

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from roomscribe.client.audio_files import read_wav  # noqa: E402


async def publish_samples(
    room: rtc.Room,
    samples: np.ndarray,
    sample_rate: int,
    channels: int = 1,
    *,
    tail_silence_s: float = 1.0,
    lead_silence_s: float = 0.8,
    queue_size_ms: int = 100,
) -> rtc.LocalTrackPublication:
    """Publish samples as a microphone track in 10 ms frames, paced by the SDK; wait for playout.

    The lead-in silence stands for the moment before a person speaks: audio sent before the
    agent's subscription is set up is not heard (as with any LiveKit server)."""
    source = rtc.AudioSource(sample_rate, channels, queue_size_ms=queue_size_ms)
    track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
    publication = await room.local_participant.publish_track(
        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    )
    step = sample_rate // 100 * channels
    lead = np.zeros(int(lead_silence_s * sample_rate) * channels, dtype=np.int16)
    tail = np.zeros(int(tail_silence_s * sample_rate) * channels, dtype=np.int16)
    padded = np.concatenate([lead, samples, tail])
    for start in range(0, len(padded) - step + 1, step):
        chunk = padded[start : start + step]
        await source.capture_frame(rtc.AudioFrame(chunk.tobytes(), sample_rate, channels, step // channels))
    await source.wait_for_playout()
    return publication


async def publish_wav_subprocess(
    url: str, token: str, path: str | Path, *, tail_silence_s: float = 1.0, linger_s: float = 0.5, timeout_s: float = 60.0
) -> None:
    """Run this module as a separate process that publishes `path` and leaves; raise if it fails."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, url, token, str(path), "--tail-silence", str(tail_silence_s), "--linger", str(linger_s),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except asyncio.TimeoutError:
        proc.kill()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"publisher failed ({proc.returncode}): {out.decode(errors='replace')[-2000:]}")


async def _main(args: argparse.Namespace) -> None:
    audio = read_wav(args.wav)
    room = rtc.Room()
    await room.connect(args.url, args.token, rtc.RoomOptions(auto_subscribe=False))
    try:
        await publish_samples(
            room, audio.samples, audio.sample_rate, audio.channels, tail_silence_s=args.tail_silence, queue_size_ms=args.queue_ms
        )
        await asyncio.sleep(args.linger)
    finally:
        await room.disconnect()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("token")
    parser.add_argument("wav")
    parser.add_argument("--tail-silence", type=float, default=1.0)
    parser.add_argument("--linger", type=float, default=0.5)
    parser.add_argument("--queue-ms", type=int, default=100)
    asyncio.run(_main(parser.parse_args()))
