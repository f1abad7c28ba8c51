"""Word error rate with a stated normaliser (shared by the bench and, if wanted, the tests).

`normalise(text)` lower-cases, removes punctuation (apostrophes kept) and collapses whitespace —
the same rule as the tests' normaliser. `normalise(text, numbers=True)` first spells numbers as
words ("press 1" and "press one" then match; "28.8" → "twenty eight point eight", "2nd" →
"second", "50%" → "fifty percent"), so a digits-versus-words choice by the model is not counted
as an error. The bench reports both and uses `numbers=True` as its headline figure.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import jiwer

_ONES = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
]  # fmt: skip
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_WORDS = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}  # fmt: skip
_NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(st|nd|rd|th)?(%)?")
_PUNCT = re.compile(r"[^a-z0-9' ]+")


def number_words(n: int) -> str:
    """English cardinal words for a non-negative integer: 1234 → 'one thousand two hundred thirty four'."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, rest = divmod(n, 10)
        return _TENS[tens] + (f" {_ONES[rest]}" if rest else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" {number_words(rest)}" if rest else "")
    for scale, name in _SCALES:
        if n >= scale:
            high, rest = divmod(n, scale)
            return f"{number_words(high)} {name}" + (f" {number_words(rest)}" if rest else "")
    raise AssertionError("unreachable")


def ordinal_words(n: int) -> str:
    """English ordinal words: 2 → 'second', 21 → 'twenty first', 40 → 'fortieth'."""
    words = number_words(n).split()
    last = words[-1]
    if last in _ORDINAL_WORDS:
        words[-1] = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def _spell(match: re.Match[str]) -> str:
    whole, decimals, suffix, percent = match.groups()
    value = int(whole.replace(",", ""))
    if suffix and not decimals:
        words = ordinal_words(value)
    else:
        words = number_words(value)
        if decimals:
            words += " point " + " ".join(_ONES[int(d)] for d in decimals)
    return f" {words}{' percent' if percent else ''} "


def normalise(text: str, *, numbers: bool = False) -> str:
    """Lower case, punctuation removed (apostrophes kept), whitespace collapsed; with
    `numbers=True`, numbers are spelled out as words first."""
    if numbers:
        text = _NUMBER.sub(_spell, text)
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def wer(reference: str, hypothesis: str, *, numbers: bool = False) -> float:
    """WER of one hypothesis against one reference, both normalised."""
    return jiwer.wer(normalise(reference, numbers=numbers), normalise(hypothesis, numbers=numbers))


@dataclass(frozen=True)
class WerScore:
    """Corpus-level WER: total edits over total reference words."""

    wer: float
    ref_words: int
    substitutions: int
    deletions: int
    insertions: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "wer": round(self.wer, 4),
            "ref_words": self.ref_words,
            "substitutions": self.substitutions,
            "deletions": self.deletions,
            "insertions": self.insertions,
        }


def corpus_wer(references: Sequence[str], hypotheses: Sequence[str], *, numbers: bool = False) -> WerScore:
    """WER over many (reference, hypothesis) pairs; empty normalised references are skipped."""
    pairs = [
        (normalise(r, numbers=numbers), normalise(h, numbers=numbers)) for r, h in zip(references, hypotheses, strict=True)
    ]
    pairs = [(r, h) for r, h in pairs if r]
    if not pairs:
        return WerScore(0.0, 0, 0, 0, 0)
    out = jiwer.process_words([r for r, _ in pairs], [h for _, h in pairs])
    ref_words = out.hits + out.substitutions + out.deletions
    return WerScore(out.wer, ref_words, out.substitutions, out.deletions, out.insertions)
