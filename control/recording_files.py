"""A session recording's files on disk (blocking I/O: called from a worker thread, never the event loop).

One directory per session, `<ROOMSCRIBE_RECORDINGS_DIR>/<session_id>/`:

- `audio.flac` (a multi-user session: `audio-<participant>-<hash>.flac`, one per participant): the
  16 kHz mono audio the pipeline heard, FLAC written with PyAV. Every packet goes to the file as
  soon as it is encoded (`flush_packets`), so a writer killed mid-session leaves a file that decodes
  up to its last packet (FLAC frames carry their own sync codes; the stream header's sample count
  stays 0, "unknown", until the file is closed). Ogg was tried and rejected: its pages are written
  about once a second, so a killed writer lost ~2 s, against one FLAC frame (0.29 s) here.
- `transcript.jsonl`: one `transcript.final` message per line, as the client received it.
- `manifest.json`: who, where, what and when; rewritten whole through a temporary file and a
  rename, so it is always either the old or the new version.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

from roomscribe.common.audio import SAMPLE_RATE

MANIFEST = "manifest.json"
TRANSCRIPT = "transcript.jsonl"
MANIFEST_FORMAT = 1
#: Session ids the server makes (`s_` + URL-safe base64); anything else names no recording.
SESSION_ID = re.compile(r"^s_[A-Za-z0-9_-]{1,64}$")


def audio_file_name(participant: str | None) -> str:
    """The audio file of one participant (None: the session's single user)."""
    if participant is None:
        return "audio.flac"
    readable = re.sub(r"[^A-Za-z0-9_.-]", "_", participant)[:32]
    digest = hashlib.sha256(participant.encode()).hexdigest()[:12]
    return f"audio-{readable}-{digest}.flac"


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """Write `data` to `path` so a reader (or a crash) only ever sees a whole file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=1)
            out.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """A recording's manifest, or None when there is none (or it cannot be read)."""
    try:
        data = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_transcript(directory: Path) -> list[dict[str, Any]]:
    """The finals of a recording, in order (a line cut short by a crash is left out)."""
    try:
        text = (directory / TRANSCRIPT).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    finals = []
    for line in text.splitlines():
        try:
            final = json.loads(line)
        except ValueError:
            continue
        if isinstance(final, dict):
            finals.append(final)
    return finals


class FlacWriter:
    """One FLAC file of 16 kHz mono PCM16, appended to piece by piece."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.samples = 0
        self._container = av.open(str(path), "w", format="flac", options={"flush_packets": "1"})
        self._stream = self._container.add_stream("flac", rate=SAMPLE_RATE, layout="mono")
        self._stream.format = "s16"

    @property
    def duration(self) -> float:
        return self.samples / SAMPLE_RATE

    def write(self, pcm: np.ndarray) -> None:
        """Encode int16 samples; whole packets reach the file at once."""
        if pcm.size == 0:
            return
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self.samples
        self.samples += pcm.size
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        """Encode what the encoder holds and finish the file (its header then has the length)."""
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()


@dataclass
class Batch:
    """What a session recorded since the last write: audio per participant, finals, gaps."""

    audio: dict[str | None, list[np.ndarray]] = field(default_factory=dict)
    finals: list[bytes] = field(default_factory=list)
    gaps: list[dict[str, Any]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.audio or self.finals or self.gaps)


class RecordingFiles:
    """A session's recording directory, written by one thread at a time (the session's writer)."""

    def __init__(self, directory: Path, manifest: dict[str, Any]) -> None:
        self.directory = directory
        self.manifest = {"format": MANIFEST_FORMAT, **manifest, "ended_at": None, "end_reason": None,
                         "audio": [], "transcript": TRANSCRIPT, "finals": 0, "gaps": []}  # fmt: skip
        self._audio: dict[str | None, FlacWriter] = {}

    def create(self) -> None:
        """Make the directory (and its parents) and write the first manifest."""
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / TRANSCRIPT).touch()
        self._write_manifest()

    def write(self, batch: Batch) -> None:
        """Append a batch: finals first (small, and what a crash would cost most), then audio."""
        changed = bool(batch.gaps)
        self.manifest["gaps"].extend(batch.gaps)
        if batch.finals:
            with (self.directory / TRANSCRIPT).open("ab") as out:
                out.write(b"".join(line + b"\n" for line in batch.finals))
            self.manifest["finals"] += len(batch.finals)
        for participant, pieces in batch.audio.items():
            writer = self._audio.get(participant)
            if writer is None:
                writer = self._audio[participant] = FlacWriter(self.directory / audio_file_name(participant))
                entry: dict[str, Any] = {"participant": participant, "file": writer.path.name, "codec": "flac"}
                entry.update(sample_rate=SAMPLE_RATE, channels=1, started_at=time.time(), duration=None)
                self.manifest["audio"].append(entry)
                changed = True
            writer.write(np.concatenate(pieces))
        if changed:
            self._write_manifest()

    def close(self, ended_at: float, reason: str) -> dict[str, Any]:
        """Finish every audio file and write the final manifest; returns it."""
        errors = []
        for writer in self._audio.values():
            try:
                writer.close()
            except Exception as error:  # the others still get finished
                errors.append(error)
        for entry in self.manifest["audio"]:
            entry["duration"] = round(self._audio[entry["participant"]].duration, 3)
        self.manifest.update(ended_at=ended_at, end_reason=reason)
        self._write_manifest()
        if errors:
            raise errors[0]
        return self.manifest

    def _write_manifest(self) -> None:
        write_json_atomically(self.directory / MANIFEST, self.manifest)
