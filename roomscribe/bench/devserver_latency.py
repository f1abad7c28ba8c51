"""Dev server benchmark: capture → subscriber audio latency and server CPU per relayed stream.

Starts ``python -m roomscribe.devserver`` in a subprocess (so its CPU can be measured alone), connects
official Python SDK participants, and prints:

* latency: a publisher (``AudioSource(queue_size_ms=20)``) sends silence with a 440 Hz burst
  every second; a subscriber timestamps the first loud 10 ms frame of each burst. Both run in
  this process, so one monotonic clock measures capture → AudioStream delivery.
* CPU: server process CPU time / wall time while P publishers talk and every participant
  auto-subscribes to every other one; "per stream" divides by the relayed (subscriber) streams.

Usage: ``python -m roomscribe.bench.devserver_latency [--bursts 15] [--cpu-seconds 10]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from roomscribe.bench.signals import tone
from roomscribe.devserver.auth import mint_join_token

RATE = 48000
SPF = RATE // 100  # 10 ms frames


def _proc_cpu_s(pid: int) -> float:
    """User+system CPU seconds of a process (all threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def start_server() -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    # Popen only starts the server (no wait); its output is read in an executor below.
    proc = subprocess.Popen([sys.executable, "-m", "roomscribe.devserver", "--port", "0", "--log-level", "WARNING"],  # noqa: ASYNC220
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = await loop.run_in_executor(None, proc.stdout.readline)
        match = re.search(r"LIVEKIT_URL=(\S+)", line)
        if match:
            return proc, match.group(1)
    proc.kill()
    raise RuntimeError("dev server did not start")


async def connect(url: str, identity: str, room: str = "bench"):
    from livekit import rtc

    r = rtc.Room()
    await r.connect(url, mint_join_token(identity, room))
    return r


async def publish(room, freq: float, burst_every_s: float | None, marks: list[float],
                  stop: asyncio.Event) -> None:
    """Continuous tone, or silence with 100 ms bursts (recording each burst's capture time)."""
    from livekit import rtc

    source = rtc.AudioSource(RATE, 1, queue_size_ms=20)
    track = rtc.LocalAudioTrack.create_audio_track("bench", source)
    await room.local_participant.publish_track(
        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
    silence = np.zeros(SPF, dtype=np.int16)
    pos = 0
    per_cycle = int((burst_every_s or 1) * 100)
    try:
        while not stop.is_set():
            cycle = pos % per_cycle
            if burst_every_s is None or cycle < 10:
                data = tone(freq, SPF, RATE, 0.5, pos * SPF)
                if burst_every_s is not None and cycle == 0:
                    marks.append(time.monotonic())
            else:
                data = silence
            await source.capture_frame(rtc.AudioFrame(data.tobytes(), RATE, 1, SPF))
            pos += 1
    finally:
        await source.aclose()


async def detect_onsets(track, onsets: list[float], stop: asyncio.Event) -> None:
    from livekit import rtc

    stream = rtc.AudioStream(track, sample_rate=RATE, num_channels=1)
    loud = False
    async for ev in stream:
        now = time.monotonic()
        x = np.frombuffer(ev.frame.data, dtype=np.int16).astype(np.float64)
        rms = float(np.sqrt(np.mean(x * x))) if len(x) else 0.0
        if rms > 2000 and not loud:
            onsets.append(now)
        loud = rms > 500
        if stop.is_set():
            break
    await stream.aclose()


async def measure_latency(url: str, bursts: int) -> list[float]:
    pub_room = await connect(url, "lat-pub", "latency")
    sub_room = await connect(url, "lat-sub", "latency")
    got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def on_track(t: Any, *_: Any) -> None:
        if not got.done():
            got.set_result(t)

    sub_room.on("track_subscribed", on_track)
    marks: list[float] = []
    onsets: list[float] = []
    stop = asyncio.Event()
    pub = asyncio.create_task(publish(pub_room, 440, 1.0, marks, stop))
    track = await asyncio.wait_for(got, 15)
    det = asyncio.create_task(detect_onsets(track, onsets, stop))
    await asyncio.sleep(bursts + 2.5)
    stop.set()
    await asyncio.gather(pub, return_exceptions=True)
    det.cancel()
    await pub_room.disconnect()
    await sub_room.disconnect()
    latencies = []
    for onset in onsets:
        before = [m for m in marks if m <= onset]
        if before and onset - before[-1] < 0.9:
            latencies.append((onset - before[-1]) * 1000)
    return latencies[1:]  # the first burst may overlap subscription set-up


async def measure_cpu(url: str, publishers: int, listeners: int, seconds: float,
                      pid: int, room: str) -> tuple[int, float]:
    """Returns (relayed streams, server CPU fraction of one core)."""
    rooms = [await connect(url, f"p{i}", room) for i in range(publishers)]
    rooms += [await connect(url, f"l{i}", room) for i in range(listeners)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(publish(r, 300 + 110 * i, None, [], stop))
             for i, r in enumerate(rooms[:publishers])]
    streams = publishers * (publishers - 1 + listeners)
    await asyncio.sleep(3)  # let every subscription settle
    cpu0, t0 = _proc_cpu_s(pid), time.monotonic()
    await asyncio.sleep(seconds)
    cpu = (_proc_cpu_s(pid) - cpu0) / (time.monotonic() - t0)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for r in rooms:
        await r.disconnect()
    return streams, cpu


async def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bursts", type=int, default=15)
    ap.add_argument("--cpu-seconds", type=float, default=10.0)
    args = ap.parse_args(argv)
    proc, url = await start_server()
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"dev server at {url} (pid {proc.pid}), {os.cpu_count()} CPUs, load average {load}"
              " (other work on the machine inflates both numbers)")
        lat = await measure_latency(url, args.bursts)
        if lat:
            q = statistics.quantiles(lat, n=10) if len(lat) >= 2 else lat
            print(f"capture -> subscriber latency over {len(lat)} bursts: median {statistics.median(lat):.0f} ms,"
                  f" p90 {q[-1]:.0f} ms, min {min(lat):.0f} ms, max {max(lat):.0f} ms"
                  " (AudioSource queue_size_ms=20, loopback)")
        else:
            print("latency: no bursts detected")
        cpu0, t0 = _proc_cpu_s(proc.pid), time.monotonic()
        await asyncio.sleep(2)
        idle = (_proc_cpu_s(proc.pid) - cpu0) / (time.monotonic() - t0)
        print(f"server CPU idle: {idle * 100:.1f}% of one core")
        for i, (pubs, listeners) in enumerate([(1, 1), (1, 4), (3, 1)]):
            streams, cpu = await measure_cpu(url, pubs, listeners, args.cpu_seconds, proc.pid, f"cpu{i}")
            per = (cpu - idle) / streams * 100
            print(f"{pubs} publisher(s), {pubs + listeners - 1 if pubs > 1 else listeners} subscriber(s) each:"
                  f" {streams} relayed stream(s), server CPU {cpu * 100:.1f}% of one core,"
                  f" {per:.1f}% per relayed stream")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
