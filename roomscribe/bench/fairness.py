"""Fairness: end-of-speech → final latency of a real-time session, alone and beside a flooder.

A *listener* streams libri, jfk, libri (each followed by 1 s of silence, 23.8 s) in 20 ms frames
at real-time pace into a pipeline on the process's shared engine. It runs twice: alone, then while
a *flooder* pipeline on the same engine is fed the same speech as fast as needed to keep at least
`--backlog` of its finals queued the whole time (what a ws client that sends audio faster than the
model transcribes it does to the model, however fast the machine). Latency per final: wall time of
the final minus the wall time the utterance's last speech sample was due (what a user feels;
includes the silence hangover). The flooder's finals all arrive (counted).

`--fixed-decode-s S` swaps the model for one that sleeps S·(1 + 0.15·(n − 1)) per batch of n (a
batch of 4 short finals cost 1.4–1.6x one decode here) and answers a fixed word: the scheduling
alone, measured without the load of a shared machine moving the decode times (WER is then
meaningless).

    .venv/bin/python -m roomscribe.bench.fairness
    .venv/bin/python -m roomscribe.bench.fairness --backlog 32 --json
    .venv/bin/python -m roomscribe.bench.fairness --fixed-decode-s 0.2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.asr import AsrEngine, AsrResult, AsrSegment
from agent.config import AsrConfig, PipelineConfig
from agent.events import FinalTranscript, PipelineEvent, PipelineNotice
from agent.pipeline import TranscriptionPipeline
from agent.scheduler import AsrJob
from roomscribe.bench.corpus import EXAMPLE_TRANSCRIPTS
from roomscribe.bench.wer import wer
from roomscribe.client.audio_files import read_wav
from roomscribe.common.audio import SAMPLE_RATE
from roomscribe.common.package_data import sample_audio

CLIPS = ("libri_61-70968-0000.wav", "jfk.wav", "libri_61-70968-0000.wav")
FRAME = SAMPLE_RATE // 50  # 20 ms


class FixedCostModel:
    """A stand-in model: sleeps `decode_s`·(1 + 0.15·(n − 1)) per batch of n, answers "words"."""

    def __init__(self, decode_s: float) -> None:
        self.decode_s = decode_s

    def load(self) -> None:
        pass

    def transcribe_batch(self, jobs: Sequence[AsrJob]) -> list[AsrResult]:
        time.sleep(self.decode_s * (1 + 0.15 * (len(jobs) - 1)))
        seg = AsrSegment("words", 0.0, 1.0, avg_logprob=-0.1, no_speech_prob=0.0, compression_ratio=1.0, temperature=0.0)
        return [AsrResult(segments=(seg,), audio_s=j.audio.size / SAMPLE_RATE, infer_s=0.0) for j in jobs]


def session_audio(names: Sequence[str]) -> tuple[np.ndarray, str]:
    """The clips, each followed by 1 s of silence (16 kHz mono int16), and the reference text."""
    gap = np.zeros(SAMPLE_RATE, np.int16)
    audio = np.concatenate([part for name in names for part in (read_wav(sample_audio(name)).samples, gap)])
    return audio, " ".join(EXAMPLE_TRANSCRIPTS[name] for name in names)


@dataclass
class Stream:
    """What one pipeline emitted, with the wall time of each event."""

    events: list[tuple[float, PipelineEvent]] = field(default_factory=list)

    def on_event(self, ev: PipelineEvent) -> None:
        self.events.append((time.perf_counter(), ev))

    def finals(self) -> list[tuple[float, FinalTranscript]]:
        return [(t, ev) for t, ev in self.events if isinstance(ev, FinalTranscript)]

    def notices(self, code: str) -> int:
        return sum(isinstance(ev, PipelineNotice) and ev.code == code for _, ev in self.events)


async def listen(engine: AsrEngine, audio: np.ndarray, t0: float) -> tuple[Stream, float]:
    """Feed `audio` in real time from wall time `t0`; returns the events and the worst lateness
    of a frame (the event loop was busy)."""
    stream = Stream()
    p = TranscriptionPipeline(engine, PipelineConfig(), stream.on_event, participant="listener")
    late = 0.0
    for i in range(0, audio.size, FRAME):
        due = t0 + (i + FRAME) / SAMPLE_RATE  # the frame is fully spoken at this wall time
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        late = max(late, -delay)
        p.feed(audio[i : i + FRAME], SAMPLE_RATE)
    await p.finish()
    await p.aclose()
    return stream, late


async def flood(engine: AsrEngine, audio: np.ndarray, backlog: int, stop: asyncio.Event) -> tuple[Stream, dict[str, Any]]:
    """Feed `audio` round and round whenever fewer than `backlog` of this pipeline's finals are
    queued, until `stop` is set; then wait for every final."""
    stream = Stream()
    p = TranscriptionPipeline(engine, PipelineConfig(), stream.on_event, participant="flooder")
    step = SAMPLE_RATE // 2
    fed = i = 0
    while not stop.is_set():
        if engine.pending_finals(p.owner) >= backlog:
            await asyncio.sleep(0.02)
            continue
        chunk = audio[i : i + step]
        p.feed(chunk, SAMPLE_RATE)
        fed += chunk.size
        i = 0 if i + step >= audio.size else i + step
        await asyncio.sleep(0)
    stopped = time.perf_counter()
    await p.finish()
    stats = p.stats
    await p.aclose()
    return stream, {"audio_s": round(fed / SAMPLE_RATE, 1), "drained_in_s": round(time.perf_counter() - stopped, 2),
                    "utterances": stats["utterances"], "finals": stats["finals"], "empty_finals": stats["empty_finals"]}


def latencies(stream: Stream, t0: float) -> list[float]:
    """End of speech → final, for finals ended by silence (a `stop` final has no speech end)."""
    return [round(t - (t0 + ev.end), 3) for t, ev in stream.finals() if ev.reason == "silence"]


def overtaken(listener: Stream, t0: float, flooder: Stream) -> list[int]:
    """Per listener final: how many flooder finals arrived between its end of speech and it (a
    load-independent view of fairness: a FIFO makes it wait for the whole backlog)."""
    flood_times = [t for t, _ in flooder.finals()]
    return [sum(t0 + ev.end < t <= ta for t in flood_times) for ta, ev in listener.finals() if ev.reason == "silence"]


def summary(xs: Sequence[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(xs), 3), "max": round(max(xs), 3), "n": len(xs)}


async def run(backlog: int, fixed_decode_s: float | None = None) -> dict[str, Any]:
    engine = AsrEngine(AsrConfig(), backend=None if fixed_decode_s is None else FixedCostModel(fixed_decode_s))
    await engine.start()
    try:
        audio, ref = session_audio(CLIPS)
        # Warm-up call: the first measured final does not pay one-off costs.
        await engine.transcribe(audio[:SAMPLE_RATE].astype(np.float32) / 32768, final=True, owner="warmup")
        load = [round(os.getloadavg()[0], 2)]

        t0 = time.perf_counter() + 0.05
        alone, alone_late = await listen(engine, audio, t0)
        alone_lat = latencies(alone, t0)

        stop = asyncio.Event()

        async def listen_then_stop() -> tuple[Stream, float]:
            try:
                return await listen(engine, audio, t0)
            finally:
                stop.set()

        t0 = time.perf_counter() + 0.05
        (beside, beside_late), (flooder, flood_info) = await asyncio.gather(
            listen_then_stop(), flood(engine, audio, backlog, stop)
        )
        beside_lat = latencies(beside, t0)
        ahead = overtaken(beside, t0, flooder)
        load.append(round(os.getloadavg()[0], 2))
        return {
            "command": " ".join(shlex.quote(a) for a in [sys.executable, "-m", "roomscribe.bench.fairness", *sys.argv[1:]]),
            "cpus": os.cpu_count(),
            "model": "tiny.en" if fixed_decode_s is None else f"fixed decode {fixed_decode_s} s",
            "loadavg_1m_before_after": load,
            "listener_audio_s": round(audio.size / SAMPLE_RATE, 2),
            "alone": {"latency_from_speech_end_s": summary(alone_lat), "latencies_s": alone_lat,
                      "wer": round(wer(ref, _text(alone)), 3),
                      "worst_frame_lateness_s": round(alone_late, 3)},
            "beside_flooder": {"latency_from_speech_end_s": summary(beside_lat), "latencies_s": beside_lat,
                               "wer": round(wer(ref, _text(beside)), 3),
                               "worst_frame_lateness_s": round(beside_late, 3),
                               "flooder_finals_between_speech_end_and_final": summary(ahead)},
            "ratio_p50": round(statistics.median(beside_lat) / statistics.median(alone_lat), 2),
            "ratio_max": round(max(beside_lat) / max(alone_lat), 2),
            "flooder": {"backlog": backlog, **flood_info, "asr_backlog_notices": flooder.notices("asr_backlog")},
            "engine": engine.stats,
        }
    finally:
        await engine.close()


def _text(stream: Stream) -> str:
    return " ".join(ev.text for _, ev in stream.finals())


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backlog", type=int, default=16, help="finals the flooder keeps queued (default 16)")
    ap.add_argument("--fixed-decode-s", type=float, metavar="S",
                    help="a stand-in model with fixed decode times instead of tiny.en (see above)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)
    out = asyncio.run(run(args.backlog, args.fixed_decode_s))
    if args.json:
        print(json.dumps(out))
        return 0
    a, b = out["alone"]["latency_from_speech_end_s"], out["beside_flooder"]["latency_from_speech_end_s"]
    f = out["flooder"]
    load = out["loadavg_1m_before_after"]
    print(f"command: {out['command']}")
    print(f"machine: {out['cpus']} CPUs, load {load[0]} → {load[1]}; model: {out['model']}")
    for label, x in (("alone", a), (f"beside a flooder ({f['backlog']} finals queued)", b)):
        print(f"end of speech → final, real-time session {label}: p50 {x['p50']:.3f} s, max {x['max']:.3f} s ({x['n']} finals)")
    late = (out["alone"]["worst_frame_lateness_s"], out["beside_flooder"]["worst_frame_lateness_s"])
    print(f"listener's worst frame lateness (event loop busy): alone {late[0]:.3f} s, beside the flooder {late[1]:.3f} s")
    ahead = out["beside_flooder"]["flooder_finals_between_speech_end_and_final"]
    print(f"flooder finals that arrived between the listener's end of speech and its final: "
          f"p50 {ahead['p50']:.0f}, max {ahead['max']:.0f}")
    print(f"ratio flooded/alone: p50 {out['ratio_p50']}x, max {out['ratio_max']}x")
    print(f"flooder: {f['audio_s']} s of audio, {f['finals']} finals + {f['empty_finals']} empty of {f['utterances']} "
          f"utterances, drained in {f['drained_in_s']} s after the listener ended, "
          f"{f['asr_backlog_notices']} asr_backlog notice(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
