"""Are the first words of a LiveKit stream heard intact? Runs `roomscribe demo` (the README's first
command) again and again, optionally beside busy processes, and checks each run's first phrase and
the audio the agent received (via ROOMSCRIBE_DEBUG_AUDIO_DIR) against the published file.

    python -m roomscribe.bench.first_words --runs 20            # quiet machine
    python -m roomscribe.bench.first_words --runs 10 --busy 2   # two CPU-bound processes beside it
    python -m roomscribe.bench.phase_sweep DIR/*.wav            # replay kept runs (--keep DIR) at every VAD phase
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from roomscribe.bench.alignment import Alignment, align, mono_float
from roomscribe.bench.wer import normalise, wer
from roomscribe.common.package_data import sample_audio

FIRST_PHRASE = "and so my fellow americans"


@dataclass(frozen=True)
class Run:
    first_final: str
    phrase_wer: float
    received: Alignment | None  # None: the agent's tap wrote nothing

    @property
    def exact(self) -> bool:
        return normalise(self.first_final).startswith(FIRST_PHRASE)


def printed_finals(stdout: str) -> list[str]:
    """The finals `roomscribe demo` / `roomscribe push` printed (lines `[start–end] text`)."""
    return [line.split("]", 1)[1].strip() for line in stdout.splitlines() if line.startswith("[")]


def _busy() -> None:  # pragma: no cover - runs in a child process until terminated
    while True:
        pass


def one_run(timeout_s: float = 180.0, keep: Path | None = None) -> Run:
    """One `roomscribe demo` (LiveKit path) with the agent's audio tap on; with `keep`, the tap of a
    run whose first phrase is wrong is copied there (to listen to, or to feed the model again)."""
    with tempfile.TemporaryDirectory() as tap_dir:
        env = dict(os.environ, ROOMSCRIBE_DEBUG_AUDIO_DIR=tap_dir)
        out = subprocess.run([sys.executable, "-m", "roomscribe.cli", "demo"], env=env, capture_output=True,
                             text=True, timeout=timeout_s, check=False).stdout
        finals = printed_finals(out)
        first = finals[0] if finals else ""
        taps = sorted(Path(tap_dir).glob("*.wav"))
        result = align(mono_float(sample_audio("jfk.wav")), mono_float(taps[0])) if taps else None
        words = normalise(first).split()[: len(FIRST_PHRASE.split())]
        run = Run(first_final=first, phrase_wer=wer(FIRST_PHRASE, " ".join(words)) if words else 1.0, received=result)
        if keep is not None and taps and not run.exact:
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(taps[0], keep / f"wrong-{int(time.time())}-{taps[0].name}")
        return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m roomscribe.bench.first_words", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--busy", type=int, default=0, help="CPU-bound processes to run beside the demo")
    parser.add_argument("--keep", type=Path, help="copy the agent's received audio of every wrong run here")
    args = parser.parse_args(argv)
    busy = [multiprocessing.Process(target=_busy, daemon=True) for _ in range(args.busy)]
    for proc in busy:
        proc.start()
    runs: list[Run] = []
    try:
        for i in range(1, args.runs + 1):
            run = one_run(keep=args.keep)
            runs.append(run)
            got = run.received
            audio = (
                f"drift {got.drift_ms:.1f} ms, {got.found}/{got.chunks} chunks found (weakest match {got.weakest:.2f})"
                if got
                else "no audio tapped"
            )
            print(f"run {i:2d}: first phrase {'exact' if run.exact else 'WRONG'} (WER {run.phrase_wer:.0%}), "
                  f"received audio {audio}: {run.first_final!r}", flush=True)
    finally:
        for proc in busy:
            proc.terminate()
    exact = sum(r.exact for r in runs)
    intact = sum(r.received is not None and r.received.intact() for r in runs)
    print(f"\nfirst phrase exact in {exact}/{len(runs)} runs, received audio intact in {intact}/{len(runs)} "
          f"(busy processes: {args.busy}; command: python -m roomscribe.bench.first_words --runs {args.runs} --busy {args.busy})")
    return 0 if exact == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
