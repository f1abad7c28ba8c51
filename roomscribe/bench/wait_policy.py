"""What OpenMP's wait policy costs the model: the same finals decoded with CTranslate2's threads
waiting passively (the default set in agent/__init__.py) and spinning (OpenMP's own default),
optionally beside CPU-bound processes, as on a shared host.

    python -m roomscribe.bench.wait_policy            # quiet machine
    python -m roomscribe.bench.wait_policy --busy 2   # two CPU-bound processes beside it

Each policy runs in a child process (OpenMP reads the policy once, when CTranslate2 loads).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys

from roomscribe.bench.first_words import _busy

_CHILD = """
import asyncio, json, resource, time
from agent.asr import AsrEngine
from agent.config import AsrConfig
from agent.resample import to_mono_float32
from roomscribe.client.audio_files import read_wav
from roomscribe.common.package_data import sample_audio

async def main():
    engine = AsrEngine(AsrConfig())
    await engine.start()
    clips = [to_mono_float32(read_wav(sample_audio(n)).samples) for n in ("jfk.wav", "libri_61-70968-0000.wav")]
    engine.submit(clips[0], final=True, owner="warm-up").future.result()
    before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for i in range({finals}):
        engine.submit(clips[i % 2], final=True, owner="bench").future.result()
    after, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(json.dumps({{"wall_s": t1 - t0, "cpu_s": cpu}}))
    await engine.close()

asyncio.run(main())
"""


def run_policy(policy: str, finals: int) -> dict[str, float]:
    """Decode `finals` finals (JFK and LibriSpeech in turn) in a child with OMP_WAIT_POLICY=`policy`."""
    env = dict(os.environ, OMP_WAIT_POLICY=policy)
    out = subprocess.run([sys.executable, "-c", _CHILD.format(finals=finals)], env=env, capture_output=True, text=True,
                         check=True, timeout=900).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m roomscribe.bench.wait_policy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--busy", type=int, default=0, help="CPU-bound processes to run beside it")
    parser.add_argument("--finals", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each policy, alternating")
    args = parser.parse_args(argv)
    busy = [multiprocessing.Process(target=_busy, daemon=True) for _ in range(args.busy)]
    for proc in busy:
        proc.start()
    try:
        for _ in range(args.rounds):
            for policy in ("PASSIVE", "ACTIVE"):
                r = run_policy(policy, args.finals)
                print(f"OMP_WAIT_POLICY={policy:7s}: {args.finals} finals in {r['wall_s']:.2f} s wall, "
                      f"{r['cpu_s']:.2f} s CPU", flush=True)
    finally:
        for proc in busy:
            proc.terminate()
    print(f"(busy processes: {args.busy}; command: python -m roomscribe.bench.wait_policy --busy {args.busy})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
