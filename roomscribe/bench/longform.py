"""The long-form set: Asterisk prompts joined into long utterances and minute-long sessions.

The Asterisk prompts are short (median 1.4 s) and each is one whole sentence, which hides what
long-form speech costs a streaming recogniser: utterances longer than `max_utterance_s`, short
pauses inside a sentence that may end an utterance early, and finals decoded without what was
said before. This set rebuilds that from the same recordings:

- an *utterance* is 10–30 s of prompts (trimmed to their speech) joined by short gaps of
  0.1–0.4 s, measured from one prompt's speech end to the next one's onset;
- a *session* is 50–110 s: 0.5 s lead, utterances separated by 1 s pauses, 1.5 s tail;
- every silence is real: the recordings' own noise floor (about −72 dBFS, not digital zero),
  taken from the silent edges of the prompts (`noise_bank`), never zeros;
- each prompt is used at most once, in a seeded order, so the set is the same on every machine
  with the same corpus and seed; the reference is the prompts' exact transcripts, joined.

A session is an ordinary `SessionPlan` whose "clips" are the utterances (a `Clip` per utterance:
its text is the joined transcript), so the bench's transports and metrics work on it unchanged.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from roomscribe.bench.corpus import Clip
from roomscribe.bench.plan import PlannedClip, SessionPlan, load_clip_audio
from roomscribe.bench.speech import speech_bounds
from roomscribe.common.audio import SAMPLE_RATE


@dataclass(frozen=True)
class LongformConfig:
    """How the set is drawn (all durations in seconds)."""

    seed: int = 13
    sessions: int | None = None  # None: as many as the corpus fills (each prompt used once)
    utterance_s: tuple[float, float] = (10.0, 30.0)
    gap_s: tuple[float, float] = (0.1, 0.4)  # speech end → next onset inside an utterance
    pause_s: float = 1.0  # between utterances
    session_s: tuple[float, float] = (50.0, 110.0)
    clip_s: tuple[float, float] = (0.8, 10.0)  # prompts used (longer ones are monologues already)
    margin_s: float = 0.03  # the prompt's own audio kept around its speech bounds
    lead_s: float = 0.5
    tail_s: float = 1.5


@dataclass(frozen=True)
class LongUtterance:
    """One joined utterance; times are session seconds."""

    clip_ids: tuple[str, ...]
    text: str
    onset_s: float  # first prompt's speech onset
    end_s: float  # last prompt's speech end
    gaps_s: tuple[float, ...]  # speech end → next speech onset, between its prompts
    spans_s: tuple[tuple[float, float], ...] = ()  # each prompt's (speech onset, speech end)


@dataclass(frozen=True)
class LongformSession:
    plan: SessionPlan  # one PlannedClip per utterance
    utterances: tuple[LongUtterance, ...]

    @property
    def text(self) -> str:
        return " ".join(u.text for u in self.utterances)


@dataclass(frozen=True)
class _Piece:
    clip: Clip
    audio: np.ndarray  # int16, speech bounds widened by the margin
    onset: int  # speech onset inside `audio` (samples)
    end: int  # speech end inside `audio`


def noise_bank(pieces: Sequence[tuple[np.ndarray, int, int]], guard_s: float = 0.02) -> np.ndarray:
    """The recordings' real silence: every (audio, onset, end)'s samples before its speech onset and
    after its speech end, minus `guard_s` next to the speech, concatenated (int16)."""
    guard = int(guard_s * SAMPLE_RATE)
    parts = []
    for audio, onset, end in pieces:
        for part in (audio[: max(0, onset - guard)], audio[min(len(audio), end + guard) :]):
            if len(part) >= guard:
                parts.append(part)
    return np.concatenate(parts).astype(np.int16) if parts else np.zeros(SAMPLE_RATE, dtype=np.int16)


def _silence(bank: np.ndarray, n: int, rng: random.Random) -> np.ndarray:
    """`n` samples of the bank from a random offset (wrapping)."""
    if n <= 0:
        return np.zeros(0, dtype=np.int16)
    start = rng.randrange(len(bank))
    return np.resize(np.roll(bank, -start), n).astype(np.int16)


def _pieces(clips: Sequence[Clip], cfg: LongformConfig) -> tuple[list[_Piece], np.ndarray]:
    margin = int(cfg.margin_s * SAMPLE_RATE)
    pieces, raw = [], []
    for clip in clips:
        samples = load_clip_audio(clip)
        on_s, end_s = clip.speech_s or speech_bounds(samples, SAMPLE_RATE)
        onset, end = round(on_s * SAMPLE_RATE), round(end_s * SAMPLE_RATE)
        raw.append((samples, onset, end))
        a, b = max(0, onset - margin), min(len(samples), end + margin)
        pieces.append(_Piece(clip, samples[a:b], onset - a, end - a))
    return pieces, noise_bank(raw)


def build_longform(clips: Sequence[Clip], cfg: LongformConfig | None = None) -> list[LongformSession]:
    """The sessions, deterministic for a given corpus and `cfg` (see the module docstring)."""
    cfg = cfg or LongformConfig()
    lo, hi = cfg.clip_s
    pool = sorted((c for c in clips if lo <= c.duration_s <= hi), key=lambda c: c.id)
    random.Random(cfg.seed).shuffle(pool)
    pieces, bank = _pieces(pool, cfg)
    rng = random.Random(cfg.seed + 1)
    sessions: list[LongformSession] = []
    queue = list(pieces)
    while queue and (cfg.sessions is None or len(sessions) < cfg.sessions):
        session = _session(f"long{len(sessions)}", queue, bank, rng, cfg)
        if session is None:
            break
        sessions.append(session)
    return sessions


def _utterance_pieces(queue: list[_Piece], rng: random.Random, cfg: LongformConfig) -> list[tuple[_Piece, float]]:
    """Take prompts off `queue` for one utterance: (piece, gap before it), gap 0 for the first."""
    target = rng.uniform(*cfg.utterance_s)
    out: list[tuple[_Piece, float]] = []
    length = 0.0
    while queue and length < target:
        gap = rng.uniform(*cfg.gap_s) if out else 0.0
        speech = (queue[0].end - queue[0].onset) / SAMPLE_RATE
        if out and length + gap + speech > cfg.utterance_s[1]:
            break
        out.append((queue.pop(0), gap))
        length += gap + speech
    return out


def _session(
    name: str, queue: list[_Piece], bank: np.ndarray, rng: random.Random, cfg: LongformConfig
) -> LongformSession | None:
    """One session from the front of `queue`; None when too few prompts are left for one."""
    target = rng.uniform(*cfg.session_s)
    taken: list[list[tuple[_Piece, float]]] = []
    length = cfg.lead_s + cfg.tail_s
    while queue and length < target:
        saved = list(queue)
        utt = _utterance_pieces(queue, rng, cfg)
        speech = sum(gap + (p.end - p.onset) / SAMPLE_RATE for p, gap in utt)
        added = speech + (cfg.pause_s if taken else 0.0)
        if taken and length + added > cfg.session_s[1]:
            queue[:] = saved  # starts the next session
            break
        taken.append(utt)
        length += added
    if length < cfg.session_s[0]:
        return None  # the corpus ran out: a short last session is not part of the set
    return _render(name, taken, bank, rng, cfg)


def _render(
    name: str, taken: list[list[tuple[_Piece, float]]], bank: np.ndarray, rng: random.Random, cfg: LongformConfig
) -> LongformSession:
    """Lay the utterances out: lead, utterances (prompts and gap fills), pauses, tail."""
    parts = [_silence(bank, round(cfg.lead_s * SAMPLE_RATE), rng)]
    pos = len(parts[0])
    planned, utterances = [], []
    for k, utt in enumerate(taken):
        if k:
            pause = round(cfg.pause_s * SAMPLE_RATE) - _edges(utt[0][0], taken[k - 1][-1][0])
            parts.append(_silence(bank, pause, rng))
            pos += len(parts[-1])
        gaps: list[float] = []
        spans: list[tuple[float, float]] = []
        for j, (piece, gap) in enumerate(utt):
            if j:
                parts.append(_silence(bank, round(gap * SAMPLE_RATE) - _edges(piece, utt[j - 1][0]), rng))
                pos += len(parts[-1])
                gaps.append((pos + piece.onset) / SAMPLE_RATE - spans[-1][1])
            parts.append(piece.audio)
            spans.append(((pos + piece.onset) / SAMPLE_RATE, (pos + piece.end) / SAMPLE_RATE))
            pos += len(piece.audio)
        text = " ".join(p.clip.text for p, _ in utt)
        u = LongUtterance(tuple(p.clip.id for p, _ in utt), text, spans[0][0], spans[-1][1], tuple(gaps), tuple(spans))
        utterances.append(u)
        clip = Clip(f"{name}-u{k}", utt[0][0].clip.path, text, u.end_s - u.onset_s)
        planned.append(PlannedClip(clip, u.onset_s, u.onset_s, u.end_s))
    parts.append(_silence(bank, round(cfg.tail_s * SAMPLE_RATE), rng))
    audio = np.concatenate(parts).astype(np.int16)
    return LongformSession(SessionPlan(name, audio, tuple(planned)), tuple(utterances))


def _edges(nxt: _Piece, prev: _Piece) -> int:
    """Samples of silence the pieces bring themselves: after `prev`'s speech end, before `nxt`'s onset."""
    return (len(prev.audio) - prev.end) + nxt.onset


def describe(sessions: Sequence[LongformSession]) -> str:
    """One line: sessions, utterances, minutes, utterance lengths."""
    utts = [u for s in sessions for u in s.utterances]
    minutes = sum(s.plan.duration_s for s in sessions) / 60
    lengths = [u.end_s - u.onset_s for u in utts]
    span = f", utterances {min(lengths):.0f}–{max(lengths):.0f} s" if lengths else ""
    return f"long-form: {len(sessions)} sessions, {len(utts)} utterances, {minutes:.1f} min{span}"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the set's shape (and, with a directory, write each session as WAV + text)."""
    import argparse
    import wave

    from roomscribe.bench.corpus import resolve_corpus

    ap = argparse.ArgumentParser(description="Build the long-form set from the Asterisk corpus.")
    ap.add_argument("--sessions", type=int)
    ap.add_argument("--seed", type=int, default=LongformConfig.seed)
    ap.add_argument("--write", metavar="DIR", help="write sessionN.wav and sessionN.txt here")
    args = ap.parse_args(argv)
    corpus = resolve_corpus()
    sessions = build_longform(corpus.clips, LongformConfig(seed=args.seed, sessions=args.sessions))
    print(describe(sessions))
    if args.write:
        out = Path(args.write)
        out.mkdir(parents=True, exist_ok=True)
        for s in sessions:
            with wave.open(str(out / f"{s.plan.name}.wav"), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(SAMPLE_RATE)
                w.writeframes(s.plan.audio.tobytes())
            (out / f"{s.plan.name}.txt").write_text(s.text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
