"""Publish a WAV file as a participant's microphone with the official `livekit` SDK (for tests).

Publishing runs in its own process, as a real client's would: a publisher sharing the server's
event loop underruns its real-time audio queue whenever that loop stalls on a loaded machine.

    python livekit_publisher.py URL TOKEN WAV [--tail-silence S] [--linger S] [--queue-ms N] [--speak-on-stdin]

With --speak-on-stdin the lead-in silence lasts until a line arrives on stdin: the test sends it
when the server reports `status {code: "listening"}`, as a real client waits for it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
from collections.abc import Awaitable
from pathlib import Path

import numpy as np
from livekit import rtc

#: Printed once the file was published and the room left (anything after is the SDK's teardown).
DONE = "publisher: done"
#: The longest lead-in silence while waiting to be told to speak.
LEAD_MAX_S = 10.0
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from roomscribe.client.audio_files import read_wav  # noqa: E402
from roomscribe.client.publish_loop import PublishLoop, ten_ms_frames  # noqa: E402


async def publish_samples(
    room: rtc.Room,
    samples: np.ndarray,
    sample_rate: int,
    channels: int = 1,
    *,
    tail_silence_s: float = 1.0,
    lead_silence_s: float = 0.8,
    queue_size_ms: int = 100,
    speak: asyncio.Future[object] | None = None,
) -> PublishLoop:
    """Publish samples as a microphone track in 10 ms frames, paced by the SDK; wait for playout.
    Returns the loop, for the caller to `aclose()` once it has left the room.

    The lead-in silence stands for the moment before a person speaks: audio sent before the
    agent's subscription is set up is not heard (as with any LiveKit server). With `speak` it
    lasts until that future is done (at least `lead_silence_s`, at most LEAD_MAX_S)."""
    loop = PublishLoop(sample_rate, channels, queue_size_ms=queue_size_ms)
    await loop.publish_to(room)
    tail = np.zeros(int(tail_silence_s * sample_rate) * channels, dtype=np.int16)
    padded = np.concatenate([samples, tail])
    await loop.run(
        ten_ms_frames(padded, sample_rate, channels), speak, lead_in_min_s=lead_silence_s, lead_in_max_s=LEAD_MAX_S
    )
    return loop


async def publish_wav_subprocess(
    url: str,
    token: str,
    path: str | Path,
    *,
    tail_silence_s: float = 1.0,
    linger_s: float = 0.5,
    timeout_s: float = 60.0,
    speak_after: Awaitable[object] | None = None,
) -> None:
    """Run this module as a separate process that publishes `path` and leaves; raise if it fails.

    `speak_after` (e.g. waiting for the server's `listening` status): the file's speech starts
    once it is done; until then the process publishes silence."""
    flags = ["--speak-on-stdin"] if speak_after is not None else []
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, url, token, str(path), "--tail-silence", str(tail_silence_s), "--linger", str(linger_s),
        *flags, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdin is not None
    stdin = proc.stdin

    async def tell_to_speak() -> None:
        if speak_after is not None:
            await speak_after
        try:
            stdin.write(b"speak\n")
            await stdin.drain()
        except ConnectionError:  # the publisher already exited; its own error is reported
            pass

    async def run() -> bytes:
        assert proc.stdout is not None
        out = await proc.stdout.read()
        await proc.wait()
        return out

    go = asyncio.ensure_future(tell_to_speak())
    try:
        out = await asyncio.wait_for(run(), timeout_s)
    except TimeoutError:
        proc.kill()
        raise
    finally:
        go.cancel()
    if proc.returncode != 0 and not (proc.returncode == -signal.SIGABRT and DONE in out.decode(errors="replace")):
        raise RuntimeError(f"publisher failed ({proc.returncode}): {out.decode(errors='replace')[-2000:]}")


def _line_on_stdin() -> asyncio.Future[object]:
    """A future done when a line (or EOF) arrives on stdin; read by a daemon thread that never
    keeps the process alive."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[object] = loop.create_future()

    def read() -> None:
        line = sys.stdin.readline()

        def deliver() -> None:
            if not done.done():
                done.set_result(line)

        loop.call_soon_threadsafe(deliver)

    threading.Thread(target=read, daemon=True).start()
    return done


async def _main(args: argparse.Namespace) -> None:
    audio = read_wav(args.wav)
    speak = _line_on_stdin() if args.speak_on_stdin else None
    room = rtc.Room()
    await room.connect(args.url, args.token, rtc.RoomOptions(auto_subscribe=False))
    publisher: PublishLoop | None = None
    try:
        publisher = await publish_samples(
            room, audio.samples, audio.sample_rate, audio.channels, tail_silence_s=args.tail_silence,
            queue_size_ms=args.queue_ms, speak=speak,
        )
        await asyncio.sleep(args.linger)
    finally:
        await room.disconnect()
        if publisher is not None:  # as roomscribe.client does: no SDK audio task left running at exit
            await publisher.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("token")
    parser.add_argument("wav")
    parser.add_argument("--tail-silence", type=float, default=1.0)
    parser.add_argument("--linger", type=float, default=0.5)
    parser.add_argument("--queue-ms", type=int, default=100)
    parser.add_argument("--speak-on-stdin", action="store_true", help="lead in with silence until a line arrives on stdin")
    asyncio.run(_main(parser.parse_args()))
    print(DONE, flush=True)
    # The Rust SDK (livekit-ffi) sometimes aborts while the interpreter tears it down ("panic in a
    # function that cannot unwind", status -6), after everything was published and the room left:
    # skip that teardown; there is nothing left to clean up in this process.
    os._exit(0)
