"""A recorded session's finals as a document: JSON, WebVTT or SubRip (SRT). Pure functions.

Each final is the `transcript.final` message the client received (`text`, `start`, `end`,
`participant`, `words`, …); cue times are its session-audio times. A multi-user session's cues
name their speaker (WebVTT: a `<v participant>` voice tag; SRT: `participant: ` before the text).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

FORMATS = {"json": "application/json", "vtt": "text/vtt; charset=utf-8", "srt": "application/x-subrip; charset=utf-8"}


def _clock(seconds: float, decimal: str) -> str:
    """`HH:MM:SS.mmm` (WebVTT) or `HH:MM:SS,mmm` (SRT)."""
    millis = max(0, round(float(seconds) * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def _one_line(text: str) -> str:
    """Cue text on one line, with no blank line that would end the cue (or the `-->` that starts one)."""
    return " ".join(str(text).split()).replace("-->", "->")


def as_json(session_id: str, finals: Sequence[dict[str, Any]]) -> str:
    return json.dumps({"session_id": session_id, "finals": list(finals)}, ensure_ascii=False)


def as_vtt(finals: Sequence[dict[str, Any]]) -> str:
    cues = ["WEBVTT", ""]
    for final in finals:
        text = _one_line(final.get("text", ""))
        speaker = final.get("participant")
        if speaker:
            text = f"<v {_one_line(speaker).replace('>', '')}>{text}"
        cues += [f"{_clock(final['start'], '.')} --> {_clock(final['end'], '.')}", text, ""]
    return "\n".join(cues)


def as_srt(finals: Sequence[dict[str, Any]]) -> str:
    cues = []
    for number, final in enumerate(finals, 1):
        text = _one_line(final.get("text", ""))
        speaker = final.get("participant")
        if speaker:
            text = f"{_one_line(speaker)}: {text}"
        cues += [str(number), f"{_clock(final['start'], ',')} --> {_clock(final['end'], ',')}", text, ""]
    return "\n".join(cues)


def render(fmt: str, session_id: str, finals: Sequence[dict[str, Any]]) -> str:
    """The finals in `fmt` (one of FORMATS)."""
    if fmt == "json":
        return as_json(session_id, finals)
    if fmt == "vtt":
        return as_vtt(finals)
    if fmt == "srt":
        return as_srt(finals)
    raise ValueError(f"unknown transcript format {fmt!r}; one of {', '.join(FORMATS)}")
