"""From a session's recorded events to per-clip outcomes and summary figures.

Matching: a `transcript.final` belongs to a clip when its [start, end] (session seconds, as the
server reports them, minus the session's timeline shift) overlaps the clip's true speech
[onset, end] widened by `TOLERANCE_S`; clips are ≥ 1 s of silence apart, so a final cannot reach a
neighbour unless segmentation merged them. The timeline shift is ~0 on ws (the server counts from
the first sample sent); on LiveKit the agent's clock starts when it subscribes, so the shift is
estimated as the offset that lets the most finals match clips. Latency never uses server times.
- final latency of a clip = arrival of the last final overlapping it − (t0 + true speech end)
- final latency from send = the same arrival − when the frame holding the speech end was actually
  sent (differs only when the bench client fell behind its real-time schedule)
- first-interim latency = arrival of the first interim overlapping it − (t0 + true speech onset)
- a clip is lost when no final overlaps it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from control.schema import Error, FinalTranscript, InterimTranscript, Status
from roomscribe.bench.transport import SessionRecord

TOLERANCE_S = 0.35
SHIFT_SLACK_S = 0.5


@dataclass(frozen=True)
class ClipOutcome:
    """How one clip of a session fared."""

    clip_id: str
    final_latency_s: float | None  # None when lost
    first_interim_latency_s: float | None  # None when no interim overlapped it
    finals: int  # finals overlapping the clip (>1: split)
    merged: bool  # its last final also overlaps another clip
    end_error_s: float | None = None  # server's speech end − true speech end (segmentation check)
    final_latency_from_send_s: float | None = None

    @property
    def lost(self) -> bool:
        return self.final_latency_s is None


def _overlaps(event: FinalTranscript | InterimTranscript, lo: float, hi: float, shift: float = 0.0) -> bool:
    return event.start - shift < hi + TOLERANCE_S and event.end - shift > lo - TOLERANCE_S


def timeline_shift(record: SessionRecord) -> float:
    """Server session time − bench session time. Candidates: 0 and (final start − clip onset) for
    the first finals and clips, within [−0.5 s, record.max_shift_s + 0.5 s] (ws: ~0; LiveKit: at
    most the lead-in); the winner matches the most clips, then has the smallest summed distance
    between each matched clip's onset and its first final's start."""
    finals = [e for _, e in record.of_type(FinalTranscript)]
    clips = record.plan.clips
    lo, hi = -SHIFT_SLACK_S, record.max_shift_s + SHIFT_SLACK_S  # never a whole clip spacing
    candidates = {0.0} | {d for f in finals[:5] for c in clips[:5] if lo <= (d := f.start - c.onset_s) <= hi}

    def score(shift: float) -> tuple[int, float]:
        matched, distance = 0, 0.0
        for c in clips:
            starts = [f.start - shift for f in finals if _overlaps(f, c.onset_s, c.end_s, shift)]
            if starts:
                matched += 1
                distance += abs(min(starts) - c.onset_s)
        return matched, -distance

    return max(sorted(candidates, key=abs), key=score)


def score_session(record: SessionRecord, shift: float | None = None) -> list[ClipOutcome]:
    """One outcome per planned clip, in order."""
    shift = timeline_shift(record) if shift is None else shift
    finals = record.of_type(FinalTranscript)
    interims = record.of_type(InterimTranscript)
    clips = record.plan.clips
    out = []
    for pc in clips:
        mine = [(t, e) for t, e in finals if _overlaps(e, pc.onset_s, pc.end_s, shift)]
        latency = merged = end_error = from_send = None
        if mine:
            t_last, last = max(mine, key=lambda te: te[1].end)
            latency = t_last - (record.t0 + pc.end_s)
            from_send = t_last - _sent_at(record, pc.end_s)
            merged = any(o is not pc and _overlaps(last, o.onset_s, o.end_s, shift) for o in clips)
            end_error = round(last.end - shift - pc.end_s, 3)
        first = min((t for t, e in interims if _overlaps(e, pc.onset_s, pc.end_s, shift)), default=None)
        interim_latency = None if first is None else first - (record.t0 + pc.onset_s)
        out.append(ClipOutcome(pc.clip.id, latency, interim_latency, len(mine), bool(merged), end_error, from_send))
    return out


def _sent_at(record: SessionRecord, t: float) -> float:
    """When the frame holding session time `t` was actually sent."""
    speed = record.speed if record.speed > 0 else 1e9
    k = int(t / record.frame_s)
    late = record.send_lateness_s[min(k, len(record.send_lateness_s) - 1)] if record.send_lateness_s else 0.0
    return record.t0 + (k + 1) * record.frame_s / speed + late


def clip_texts(record: SessionRecord) -> list[str]:
    """Per clip, the text of the finals overlapping it (for diagnostics; WER uses `final_text`)."""
    shift = timeline_shift(record)
    finals = sorted((e for _, e in record.of_type(FinalTranscript)), key=lambda e: e.seq)
    return [" ".join(e.text.strip() for e in finals if _overlaps(e, c.onset_s, c.end_s, shift)) for c in record.plan.clips]


def final_text(record: SessionRecord) -> str:
    """Every final's text in event order."""
    finals = sorted((e for _, e in record.of_type(FinalTranscript)), key=lambda e: e.seq)
    return " ".join(e.text.strip() for e in finals)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (linear interpolation), None for no values."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else None


def summarise(records: Iterable[SessionRecord]) -> dict[str, Any]:
    """Latency percentiles, losses and health counters over several sessions."""
    records = list(records)
    shifts = [timeline_shift(r) for r in records]
    outcomes = [o for r, sh in zip(records, shifts, strict=False) for o in score_session(r, sh)]
    end_errors = [o.end_error_s for o in outcomes if o.end_error_s is not None]
    finals = [o.final_latency_s for o in outcomes if o.final_latency_s is not None]
    from_send = [o.final_latency_from_send_s for o in outcomes if o.final_latency_from_send_s is not None]
    interims = [o.first_interim_latency_s for o in outcomes if o.first_interim_latency_s is not None]
    lateness = [x for r in records for x in r.send_lateness_s]
    statuses = Counter(e.code for r in records for _, e in r.of_type(Status))
    errors = Counter(e.code for r in records for _, e in r.of_type(Error))
    r3 = lambda x: None if x is None else round(x, 3)  # noqa: E731
    return {
        "sessions": len(records),
        "clips": len(outcomes),
        "finals_matched": len(finals),
        "lost": sum(o.lost for o in outcomes),
        "lost_clips": [o.clip_id for o in outcomes if o.lost],
        "merged": sum(o.merged for o in outcomes),
        "split": sum(o.finals > 1 for o in outcomes),
        "final_latency_s": {"p50": r3(percentile(finals, 50)), "p95": r3(percentile(finals, 95)),
                            "max": r3(max(finals, default=None)), "n": len(finals)},
        "final_latency_from_send_s": {"p50": r3(percentile(from_send, 50)), "p95": r3(percentile(from_send, 95))},
        "first_interim_latency_s": {"p50": r3(percentile(interims, 50)), "p95": r3(percentile(interims, 95)),
                                    "n": len(interims)},
        "speech_end_error_s": {"p50": r3(percentile(end_errors, 50)), "p95": r3(percentile(end_errors, 95))},
        "timeline_shift_s": [round(x, 3) for x in shifts],
        "interim_coverage": round(len(interims) / len(outcomes), 3) if outcomes else None,
        "client_send_lateness_s": {"p99": r3(percentile(lateness, 99)), "max": r3(max(lateness, default=None))},
        "status_notices": dict(statuses),
        "errors": dict(errors),
        "incomplete_sessions": [r.user for r in records if not r.completed],
        "session_errors": [r.error for r in records if r.error],
    }
