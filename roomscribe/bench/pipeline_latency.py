"""End-of-speech → final latency of the transcription pipeline, fed at real-time pace.

Feeds N concurrent streams (each: libri, 1 s silence, jfk, 1 s silence, libri, 1 s silence) in
20 ms frames on a wall-clock schedule and reports, per final:
  - from speech end: wall time of the final minus the wall time the utterance's last speech
    sample was fed (what a user feels; includes the silence hangover),
  - from detection: wall time of the final minus the moment the pipeline decided the utterance
    had ended,
plus WER of all finals against the reference and the engine's scheduling counters.

    .venv/bin/python -m roomscribe.bench.pipeline_latency --streams 1
    .venv/bin/python -m roomscribe.bench.pipeline_latency --streams 4 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from dataclasses import fields
from typing import Any

import numpy as np

from agent.asr import AsrEngine
from agent.config import AsrConfig, PipelineConfig
from agent.events import FinalTranscript, InterimTranscript, PipelineNotice
from agent.pipeline import TranscriptionPipeline
from roomscribe.bench.corpus import EXAMPLE_TRANSCRIPTS
from roomscribe.bench.wer import wer
from roomscribe.client.audio_files import read_wav
from roomscribe.common.audio import SAMPLE_RATE
from roomscribe.common.package_data import sample_audio


def scenario() -> tuple[np.ndarray, str]:
    """libri, jfk, libri, each followed by 1 s of silence (16 kHz mono), and the reference text."""
    gap = np.zeros(SAMPLE_RATE, np.int16)
    names = ["libri_61-70968-0000.wav", "jfk.wav", "libri_61-70968-0000.wav"]
    audio = np.concatenate([part for name in names for part in (read_wav(sample_audio(name)).samples, gap)])
    return audio, " ".join(EXAMPLE_TRANSCRIPTS[name] for name in names)


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


async def run_stream(engine, cfg, audio, t0, frame_ms=20, offset_s=0.0):
    events: list[tuple[float, object]] = []
    await asyncio.sleep(max(0.0, t0 + offset_s - time.perf_counter()))
    t0 += offset_s
    p = TranscriptionPipeline(engine, cfg, lambda e: events.append((time.perf_counter(), e)))
    step = SAMPLE_RATE * frame_ms // 1000
    for i in range(0, audio.size, step):
        due = t0 + (i + step) / SAMPLE_RATE  # the frame is complete at this wall time
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        p.feed(audio[i : i + step], SAMPLE_RATE)
    await p.finish()
    stats = p.stats
    det = p.final_latencies
    await p.aclose()
    return events, stats, det, t0


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=1)
    ap.add_argument("--no-interims", action="store_true")
    ap.add_argument("--cpu-threads", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--encoder-window", default=AsrConfig.encoder_window, choices=["full", "adaptive"])
    ap.add_argument("--max-batch", type=int, default=AsrConfig.max_batch)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a PipelineConfig field, e.g. --set silence_hangover_s=0.5")
    ap.add_argument("--synchronous", action="store_true", help="start all streams together")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--show", action="store_true", help="print the finals of the first stream")
    args = ap.parse_args()

    kw: dict[str, Any] = {"interims": not args.no_interims}
    types = {f.name: f.type for f in fields(PipelineConfig)}
    for item in args.set:
        k, v = item.split("=", 1)
        t = types[k]
        kw[k] = (v.lower() in ("1", "true", "yes")) if "bool" in str(t) else float(v)
    cfg = PipelineConfig(**kw)
    engine = AsrEngine(AsrConfig(cpu_threads=args.cpu_threads, workers=args.workers,
                                 encoder_window=args.encoder_window, max_batch=args.max_batch))
    await engine.start()
    audio, ref = scenario()
    # Warm-up call so the first measured final does not pay one-off costs.
    await engine.transcribe(audio[:SAMPLE_RATE].astype(np.float32) / 32768, final=True, owner="warmup")
    load_before = os.getloadavg()[0]
    cpu0 = time.process_time()
    t0 = time.perf_counter() + 0.05
    # Streams start staggered (as real talkers would) unless --synchronous.
    stagger = 0.0 if args.synchronous else audio.size / SAMPLE_RATE / max(1, args.streams) / 3
    results = await asyncio.gather(
        *(run_stream(engine, cfg, audio, t0, offset_s=k * stagger) for k in range(args.streams))
    )
    from_end, from_det, wers, interims, dropped, notices = [], [], [], 0, 0, 0
    for events, stats, det, t_start in results:
        finals = [(w, e) for w, e in events if isinstance(e, FinalTranscript)]
        for w, e in finals:
            if e.reason == "silence":
                from_end.append(w - (t_start + e.end))
        from_det += det
        hyp = " ".join(e.text for _, e in finals)
        wers.append(wer(ref, hyp))
        interims += sum(isinstance(e, InterimTranscript) for _, e in events)
        notices += sum(isinstance(e, PipelineNotice) for _, e in events)
        dropped += stats["interims_dropped"]
    st = engine.stats
    calls = sum(st[k] for k in ("finals_completed", "interims_completed", "speculative_completed"))
    out = {
        "streams": args.streams,
        "loadavg_1m_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "cpus": os.cpu_count(),
        "config": {**kw, "encoder_window": args.encoder_window, "max_batch": args.max_batch},
        "audio_s_per_stream": round(audio.size / SAMPLE_RATE, 2),
        "finals": len(from_det),
        "latency_from_speech_end_s": {
            "p50": round(statistics.median(from_end), 3),
            "p90": round(_pct(from_end, 0.9), 3),
            "max": round(max(from_end), 3),
        },
        "latency_from_detection_s": {
            "p50": round(statistics.median(from_det), 3),
            "p90": round(_pct(from_det, 0.9), 3),
            "max": round(max(from_det), 3),
        },
        "wer_mean": round(statistics.mean(wers), 4),
        "interims_emitted": interims,
        "interims_dropped": dropped,
        "notices": notices,
        "jobs": calls,
        "model_calls": st["batches"],
        "model_wall_s_per_call": round(st["busy_s"] / max(1, st["batches"]), 3),
        "process_cpu_s_per_job": round((time.process_time() - cpu0) / max(1, calls), 3),
        "engine": st,
    }
    await engine.close()
    if args.show:
        events0, t_start0 = results[0][0], results[0][3]
        for w, e in events0:
            if isinstance(e, FinalTranscript):
                print(f"  final {e.start:6.2f}-{e.end:6.2f} +{w - (t_start0 + e.end):.3f}s {e.text}")
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k}: {v}")


if __name__ == "__main__":
    asyncio.run(main())
