"""Guards against Whisper's known failure modes on the text it returns.

- segments that are probably not speech (high no_speech_prob with low confidence, or very low
  confidence, or a high compression ratio = repetitive output) are dropped;
- non-speech annotations like "[BLANK_AUDIO]", "(music)", "♪" are removed;
- stock hallucinations ("Thank you.", "Thanks for watching!") are dropped unless confident;
- phrases repeated in a loop are collapsed to one occurrence.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from .asr import AsrSegment

_ANNOTATION = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*|[♪♫]+")
_NORM = re.compile(r"[^a-z0-9' ]+")
_STOCK_HALLUCINATIONS = {
    "thank you",
    "thank you very much",
    "thanks",
    "thanks for watching",
    "thank you for watching",
    "thanks for listening",
    "thank you for listening",
    "please subscribe",
    "subscribe to my channel",
    "you",
    "bye",
    "okay",
    "so",
    "the end",
}


@dataclass(frozen=True)
class GuardConfig:
    drop_no_speech_prob: float = 0.6
    drop_avg_logprob: float = -0.8
    hard_no_speech_prob: float = 0.9
    min_avg_logprob: float = -1.5
    max_compression_ratio: float = 2.4
    # A stock phrase survives only with at least this confidence and little no-speech mass.
    stock_min_avg_logprob: float = -0.5
    stock_max_no_speech_prob: float = 0.3


def normalise(text: str) -> str:
    """Lowercase, drop punctuation, squeeze spaces (used for comparisons)."""
    return " ".join(_NORM.sub(" ", text.lower()).split())


def keep_segment(seg: AsrSegment, cfg: GuardConfig) -> bool:
    """Whether a segment looks like real speech."""
    if seg.no_speech_prob > cfg.hard_no_speech_prob:
        return False
    if seg.avg_logprob < cfg.min_avg_logprob:
        return False
    if seg.no_speech_prob > cfg.drop_no_speech_prob and seg.avg_logprob < cfg.drop_avg_logprob:
        return False
    if seg.compression_ratio > cfg.max_compression_ratio:
        return False
    if normalise(strip_annotations(seg.text)) in _STOCK_HALLUCINATIONS and (
        seg.avg_logprob < cfg.stock_min_avg_logprob
        or seg.no_speech_prob > cfg.stock_max_no_speech_prob
    ):
        return False
    return True


def text_compression_ratio(text: str) -> float:
    """Whisper's measure of repetitiveness: UTF-8 length over zlib-compressed length."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def unloop(seg: AsrSegment, cfg: GuardConfig) -> AsrSegment:
    """A segment that is a repetition loop of real words ("Messages Messages Messages …", common
    on one-word utterances) keeps those words once instead of being dropped whole; a segment
    whose repetitiveness is not a back-to-back loop is left for `keep_segment` to reject."""
    if seg.compression_ratio <= cfg.max_compression_ratio:
        return seg
    collapsed = collapse_repeats(" ".join(strip_annotations(seg.text).split()))
    ratio = text_compression_ratio(collapsed)
    if not normalise(collapsed) or ratio > cfg.max_compression_ratio or len(collapsed) * 2 > len(seg.text.strip()):
        return seg
    from dataclasses import replace

    return replace(seg, text=collapsed, compression_ratio=ratio)


def strip_annotations(text: str) -> str:
    return " ".join(_ANNOTATION.sub(" ", text).split())


def collapse_repeats(text: str, max_ngram: int = 8) -> str:
    """Collapse a word n-gram repeated back to back (≥3× for n≥2, ≥4× for single words)."""
    words = text.split()
    if len(words) < 3:
        return text
    changed = True
    while changed:
        changed = False
        for n in range(1, min(max_ngram, len(words) // 3) + 1):
            min_reps = 4 if n == 1 else 3
            i = 0
            while i + n * min_reps <= len(words):
                unit = [normalise(w) for w in words[i : i + n]]
                reps = 1
                while words[i + reps * n : i + (reps + 1) * n] and [
                    normalise(w) for w in words[i + reps * n : i + (reps + 1) * n]
                ] == unit:
                    reps += 1
                if reps >= min_reps:
                    # keep the first occurrence, plus the punctuation of the last one
                    last = words[i + (reps - 1) * n : i + reps * n]
                    words = words[:i] + last + words[i + reps * n :]
                    changed = True
                i += 1
            if changed:
                break
    return " ".join(words)


def clean_segments(segments: Iterable[AsrSegment], cfg: GuardConfig) -> list[AsrSegment]:
    """Segments that pass the guards (text annotations stripped)."""
    kept = []
    for seg in segments:
        seg = unloop(seg, cfg)
        if not keep_segment(seg, cfg):
            continue
        text = strip_annotations(seg.text)
        if not normalise(text):
            continue
        kept.append(seg if text == seg.text.strip() else _replace_text(seg, text))
    return kept


def clean_text(segments: Iterable[AsrSegment], cfg: GuardConfig) -> str:
    """The guarded text of a result ('' when nothing credible was said)."""
    text = " ".join(s.text.strip() for s in clean_segments(segments, cfg))
    return collapse_repeats(" ".join(text.split()))


def _replace_text(seg: AsrSegment, text: str) -> AsrSegment:
    from dataclasses import replace

    return replace(seg, text=text)
