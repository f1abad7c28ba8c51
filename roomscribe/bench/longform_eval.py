"""Accuracy on the long-form set through the in-process pipeline, and where its errors come from.

The pipeline (agent/pipeline.py) is fed each session's audio as fast as it takes it (interims off
unless asked), so the finals do not depend on the machine's load: segmentation counts samples,
and with `final_context_chars` on, finals run one after another so their context never depends
on timing either. The figures are the same on a loaded machine; only the run time changes.

    python -m roomscribe.bench.longform_eval                       # streaming WER + breakdown
    python -m roomscribe.bench.longform_eval --offline --oracle    # + offline and oracle figures
    python -m roomscribe.bench.longform_eval --set final_context_chars=200 --set max_utterance_s=25

Breakdown of the streaming errors:
- `splits`: finals per reference utterance, and where each extra boundary fell — at a gap between
  two prompts (a sentence boundary of this set) or inside a prompt (mid-sentence), by reason;
- `oracle`: each reference utterance decoded as one final (no segmentation errors), without and
  with the previous finals as context: the part of the gap that segmentation and context explain;
- `guards`: words the text guards removed from the model's finals.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from agent.asr import AsrEngine, AsrResult
from agent.config import AsrConfig, PipelineConfig
from agent.events import FinalTranscript, PipelineEvent
from agent.pipeline import TranscriptionPipeline
from agent.scheduler import AsrJob
from agent.textguard import clean_text
from roomscribe.bench.corpus import Clip
from roomscribe.bench.longform import LongformConfig, LongformSession, LongUtterance, build_longform, describe
from roomscribe.bench.offline import guard_config
from roomscribe.bench.plan import build_plan, pick_clips
from roomscribe.bench.wer import corpus_wer
from roomscribe.common.audio import SAMPLE_RATE

_FEED = SAMPLE_RATE // 2


@dataclass
class GuardTally:
    """Words of final results before and after the text guards."""

    raw_words: int = 0
    kept_words: int = 0


class _Recording:
    """The engine, recording every final-kind job's raw result (for the guards' tally)."""

    def __init__(self, engine: AsrEngine) -> None:
        self._engine = engine
        self.finals: list[AsrJob] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def submit(self, audio: np.ndarray, **kw: Any) -> AsrJob:
        job = self._engine.submit(audio, **kw)
        if kw.get("final"):
            self.finals.append(job)
        return job


async def stream_session(
    engine: AsrEngine, cfg: PipelineConfig, session: LongformSession
) -> tuple[list[FinalTranscript], list[AsrJob]]:
    """Feed one session through a pipeline; its finals and the final jobs it submitted."""
    events: list[PipelineEvent] = []
    rec = _Recording(engine)
    p = TranscriptionPipeline(rec, cfg, events.append)  # type: ignore[arg-type]  # a recording proxy of the engine
    audio = session.plan.audio
    for i in range(0, audio.size, _FEED):
        p.feed(audio[i : i + _FEED], SAMPLE_RATE)
        await asyncio.sleep(0)
    await p.finish()
    await p.aclose()
    return [e for e in events if isinstance(e, FinalTranscript)], rec.finals


def prompt_sessions(clips: Sequence[Clip], per_session: int = 50, gap_s: float = 1.0) -> list[LongformSession]:
    """The short-prompt set as the bench's accuracy phase streams it: `per_session` prompts per
    session, `gap_s` of digital silence between them; each prompt is one reference utterance."""
    out = []
    for i in range(0, len(clips), per_session):
        plan = build_plan(f"prompts{i // per_session}", clips[i : i + per_session], gap_s=gap_s)
        utts = tuple(
            LongUtterance((c.clip.id,), c.clip.text, c.onset_s, c.end_s, (), ((c.onset_s, c.end_s),)) for c in plan.clips
        )
        out.append(LongformSession(plan, utts))
    return out


def split_breakdown(session: LongformSession, finals: Sequence[FinalTranscript], tol_s: float = 0.15) -> Counter[str]:
    """Where the finals' boundaries fall against the reference utterances (see the module doc)."""
    out: Counter[str] = Counter()
    for u in session.utterances:
        mine = [f for f in finals if f.start < u.end_s + tol_s and f.end > u.onset_s - tol_s]
        out["utterances"] += 1
        out[f"finals_{min(len(mine), 4)}{'+' if len(mine) >= 4 else ''}"] += 1
        for f in sorted(mine, key=lambda f: f.end)[:-1]:  # every end before the utterance's last
            gaps = zip(u.spans_s, u.spans_s[1:], strict=False)
            at_gap = any(a - tol_s <= f.end <= b + tol_s for (_, a), (b, _) in gaps)
            out[f"cut_{f.reason}_{'at_gap' if at_gap else 'mid_prompt'}"] += 1
    return out


async def oracle_texts(engine: AsrEngine, cfg: PipelineConfig, session: LongformSession, context_chars: int) -> list[str]:
    """Each reference utterance decoded as one final (pre-roll before, hangover after, the
    pipeline's lead-in), with the previous oracle texts as context when `context_chars` > 0."""
    guard = guard_config(cfg)
    audio = session.plan.audio.astype(np.float32) / 32768.0
    lead = np.zeros(int(cfg.lead_in_s * SAMPLE_RATE), np.float32)
    texts: list[str] = []
    for u in session.utterances:
        a = max(0, int((u.onset_s - cfg.pre_roll_s) * SAMPLE_RATE))
        b = min(audio.size, int((u.end_s + cfg.silence_hangover_s) * SAMPLE_RATE))
        context = " ".join(texts)[-context_chars:].split(" ", 1)[-1] if context_chars > 0 and texts else ""
        job = engine.submit(np.concatenate([lead, audio[a:b]]), final=True, owner="oracle", context=context)
        res: AsrResult | None = await asyncio.wrap_future(job.future)
        texts.append(clean_text(res.segments, guard) if res else "")
    return texts


def _score(refs: list[str], hyps: list[str]) -> dict[str, Any]:
    return corpus_wer(refs, hyps, numbers=True).as_dict()


def pipeline_config(overrides: Sequence[str], interims: bool) -> PipelineConfig:
    """PipelineConfig with FIELD=VALUE overrides (typed from the dataclass's defaults)."""
    kw: dict[str, Any] = {"interims": interims}
    defaults = PipelineConfig()
    for item in overrides:
        k, v = item.split("=", 1)
        if k not in {f.name for f in fields(PipelineConfig)}:
            raise SystemExit(f"unknown PipelineConfig field {k!r}")
        cur = getattr(defaults, k)
        kw[k] = (v.lower() in ("1", "true", "yes")) if isinstance(cur, bool) else type(cur)(v) if cur is not None else float(v)
    return PipelineConfig(**kw)


async def evaluate(sessions: Sequence[LongformSession], asr: AsrConfig, cfg: PipelineConfig, *, oracle: bool) -> dict[str, Any]:
    """Streaming WER with its breakdown (and the oracle figures) over `sessions`."""
    engine = AsrEngine(asr)
    await engine.start()
    guard = guard_config(cfg)
    refs = [s.text for s in sessions]
    hyps, splits, reasons, tally = [], Counter[str](), Counter[str](), GuardTally()
    per_session: list[dict[str, Any]] = []
    guarded: list[dict[str, Any]] = []  # final-kind results the guards shortened
    t0 = time.perf_counter()
    try:
        for s in sessions:
            finals, jobs = await stream_session(engine, cfg, s)
            hyp = " ".join(f.text for f in finals)
            hyps.append(hyp)
            per_session.append({"name": s.plan.name, **_score([s.text], [hyp]), "finals": len(finals)})
            splits.update(split_breakdown(s, finals))
            reasons.update(f.reason for f in finals)
            for job in jobs:
                res = job.future.result() if job.future.done() and not job.future.cancelled() else None
                if res is not None and job.future.exception() is None:
                    kept = clean_text(res.segments, guard)
                    tally.raw_words += len(res.text.split())
                    tally.kept_words += len(kept.split())
                    if len(kept.split()) != len(res.text.split()):
                        guarded.append({"kind": job.kind.value, "raw": res.text, "kept": kept,
                                        "segments": [(round(g.avg_logprob, 2), round(g.no_speech_prob, 2),
                                                      round(g.compression_ratio, 2)) for g in res.segments]})  # fmt: skip
        out: dict[str, Any] = {"streaming": _score(refs, hyps), "final_reasons": dict(reasons),
                               "splits": dict(sorted(splits.items())), "guards": asdict(tally), "guarded": guarded,
                               "per_session": per_session, "streaming_wall_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
        if oracle:
            for name, chars in (("oracle_no_context", 0), ("oracle_context", cfg.final_context_chars or 200)):
                texts = [" ".join(await oracle_texts(engine, cfg, s, chars)) for s in sessions]
                out[name] = _score(refs, texts)
        out["hyps"] = hyps
        return out
    finally:
        await engine.close()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, help="the first N sessions of the set (default: all)")
    ap.add_argument("--seed", type=int, default=LongformConfig.seed)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="PipelineConfig override")
    ap.add_argument("--interims", action="store_true", help="request interims too (finals only by default)")
    ap.add_argument("--offline", action="store_true", help="also the offline reference (one call per session, VAD on)")
    ap.add_argument("--prompts", type=int, metavar="N",
                    help="the short-prompt set instead: N corpus prompts as the bench picks them (seed 1)")
    ap.add_argument("--oracle", action="store_true", help="also decode each reference utterance whole")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args(argv)
    from roomscribe.bench.corpus import resolve_corpus
    from roomscribe.bench.offline import transcribe_sessions_offline

    corpus = resolve_corpus()
    if args.prompts:
        sessions = prompt_sessions(pick_clips(corpus.clips, args.prompts, seed=8, min_s=0, max_s=1e9))
    else:
        sessions = build_longform(corpus.clips, LongformConfig(seed=args.seed, sessions=args.sessions))
    print(describe(sessions), file=sys.stderr)
    cfg = pipeline_config(args.set, args.interims)
    asr = AsrConfig()
    out: dict[str, Any] = {"set": describe(sessions), "overrides": args.set, "interims": args.interims}
    out.update(asyncio.run(evaluate(sessions, asr, cfg, oracle=args.oracle)))
    if args.offline:
        texts = transcribe_sessions_offline([s.plan.audio for s in sessions], asr)
        out["offline"] = _score([s.text for s in sessions], texts)
    for key in ("streaming", "offline", "oracle_no_context", "oracle_context"):
        if key in out:
            b = out[key]
            print(f"{key:18s} WER {b['wer'] * 100:6.2f}%  S {b['substitutions']} D {b['deletions']} "
                  f"I {b['insertions']} / {b['ref_words']}")
    print(f"final reasons {out['final_reasons']}  splits {out['splits']}  guards {out['guards']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
