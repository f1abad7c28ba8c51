"""Is a recording's first phrase transcribed the same at every VAD-window phase?

The VAD reads 32 ms windows from the first sample received, so where the speech falls within a
window (its phase) differs from stream to stream; over LiveKit it changes from run to run. A
pipeline that cuts or pads an utterance differently at some phases garbles the first words only
at those phases (issue 16: the speculative final heard 0.1 s of silence, not 0.3 s). This replays
each recording through an in-process pipeline once per phase (silence prepended, in steps of
`512 / phases` samples) and reports the first final at each.

    python -m roomscribe.bench.phase_sweep                       # examples/audio/jfk.wav
    python -m roomscribe.bench.first_words --runs 20 --keep DIR  # keep the audio of wrong runs
    python -m roomscribe.bench.phase_sweep DIR/*.wav             # then replay what LiveKit delivered
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.asr import AsrEngine
from agent.config import AsrConfig, PipelineConfig
from agent.events import FinalTranscript
from agent.pipeline import TranscriptionPipeline
from agent.vad import WINDOW
from roomscribe.bench.first_words import FIRST_PHRASE
from roomscribe.bench.wer import normalise
from roomscribe.client.audio_files import read_wav
from roomscribe.common.package_data import sample_audio


@dataclass(frozen=True)
class PhaseResult:
    path: Path
    shift: int  # samples of silence prepended (at 16 kHz)
    first_final: str


def shifts(phases: int) -> list[int]:
    """Offsets (16 kHz samples) that put the audio at `phases` evenly spaced VAD-window phases."""
    return [k * WINDOW // phases for k in range(phases)]


async def first_final(engine: AsrEngine, samples: np.ndarray, rate: int, shift: int) -> str:
    """The first final of `samples` (mono int16 at `rate`) fed after `shift` samples (16 kHz) of silence."""
    audio = np.concatenate([np.zeros(shift * rate // 16000, samples.dtype), samples])
    finals: list[str] = []
    pipeline = TranscriptionPipeline(
        engine,
        PipelineConfig(interims=False),
        lambda e: finals.append(e.text) if isinstance(e, FinalTranscript) else None,
    )
    step = rate // 100  # 10 ms frames, faster than real time
    for i in range(0, audio.size - step + 1, step):
        pipeline.feed(audio[i : i + step], rate, 1)
        await asyncio.sleep(0)
    await pipeline.finish()
    return finals[0] if finals else ""


async def sweep(paths: Sequence[Path], phases: int) -> list[PhaseResult]:
    """Every recording at every phase (one engine, one pipeline per run)."""
    engine = AsrEngine(AsrConfig())
    await engine.start()
    try:
        results = []
        for path in paths:
            wav = read_wav(path)
            mono = wav.samples.reshape(-1, wav.channels).mean(axis=1).astype(np.int16) if wav.channels > 1 else wav.samples
            for shift in shifts(phases):
                results.append(PhaseResult(path, shift, await first_final(engine, mono, wav.sample_rate, shift)))
        return results
    finally:
        await engine.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m roomscribe.bench.phase_sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("wavs", nargs="*", type=Path, help="recordings of the JFK clip (default: examples/audio/jfk.wav)")
    parser.add_argument("--phases", type=int, default=8, help="phases per 32 ms VAD window (default 8)")
    parser.add_argument("--expect", default=FIRST_PHRASE, help="the first phrase every run should start with")
    args = parser.parse_args(argv)
    paths = args.wavs or [sample_audio("jfk.wav")]
    results = asyncio.run(sweep(paths, args.phases))
    exact = 0
    for r in results:
        ok = normalise(r.first_final).startswith(args.expect)
        exact += ok
        print(f"{r.path.name} shift {r.shift:3d}: {'exact' if ok else 'WRONG'} {r.first_final!r}", flush=True)
    command = "python -m roomscribe.bench.phase_sweep " + " ".join(sys.argv[1:] if argv is None else argv)
    print(
        f"\nfirst phrase exact in {exact}/{len(results)} "
        f"({len(paths)} recordings x {args.phases} phases; command: {command.strip()})"
    )
    return 0 if exact == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
