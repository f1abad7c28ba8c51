"""The bench's speech corpus: real recordings with exact transcripts.

Primary: Debian's Asterisk prompt packages (one US English voice, ~550 telephone prompts, ~24 min,
CC-BY-SA-3.0, Allison Smith / Digium). `build_asterisk_corpus(dir)` runs `apt-get download` (no
root needed) for `asterisk-core-sounds-en-g722` (the audio, G.722 = 16 kHz wideband) and
`asterisk-core-sounds-en` (the transcript list `core-sounds-en.txt.gz`), unpacks both with
`dpkg-deb -x`, decodes each prompt with PyAV to 16 kHz mono PCM16 WAV and writes `manifest.jsonl`
last (its presence marks a complete corpus). The corpus lives in a cache directory and is never
committed. Fallback, when apt-get is unavailable: the two clips in `examples/audio`.

    python -m roomscribe.bench.corpus [DIR]     # build (or check) the corpus
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from roomscribe.common.audio import SAMPLE_RATE
from roomscribe.common.package_data import sample_audio

log = logging.getLogger(__name__)

PACKAGES = ("asterisk-core-sounds-en-g722", "asterisk-core-sounds-en")
LICENCE = "CC-BY-SA-3.0 (Allison Smith / Digium), Debian asterisk-core-sounds-en-g722"
_TRANSCRIPTS = "usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
_SOUNDS = "usr/share/asterisk/sounds/en_US_f_Allison"

# Exact transcripts of the bundled sample recordings (JFK: public domain; LibriSpeech: CC-BY-4.0).
EXAMPLE_TRANSCRIPTS = {
    "jfk.wav": "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country.",
    "libri_61-70968-0000.wav": "He began a confused complaint against the wizard who had vanished "
    "behind the curtain on the left.",
}
# Hand-marked speech bounds (s) where the energy rule of bench.speech cannot work: JFK ends in
# crowd noise as loud as speech; "country" ends at 10.25 s (50 ms level trace).
EXAMPLE_SPEECH_S = {"jfk.wav": (0.33, 10.25)}


class CorpusUnavailable(RuntimeError):
    """The corpus could not be built here (no apt-get, no network, …); the message says why."""


@dataclass(frozen=True)
class Clip:
    """One recording with its exact transcript."""

    id: str
    path: Path
    text: str
    duration_s: float
    speech_s: tuple[float, float] | None = None  # hand-marked (onset, end); None → bench.speech


@dataclass(frozen=True)
class Corpus:
    """Clips plus where they came from (shown in the report)."""

    name: str  # "asterisk" | "examples"
    clips: tuple[Clip, ...]
    description: str
    fallback_reason: str | None = None  # set when this is the fallback for a missing corpus

    @property
    def duration_s(self) -> float:
        return sum(c.duration_s for c in self.clips)


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/roomscribe/asterisk-corpus`, else `~/.cache/roomscribe/asterisk-corpus`."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "roomscribe" / "asterisk-corpus"


def example_corpus(reason: str | None = None) -> Corpus:
    """The two bundled sample recordings (JFK, 11 s; LibriSpeech, 4.9 s)."""
    clips = tuple(
        Clip(Path(name).stem, sample_audio(name), text, _wav_duration(sample_audio(name)), EXAMPLE_SPEECH_S.get(name))
        for name, text in EXAMPLE_TRANSCRIPTS.items()
    )
    return Corpus("examples", clips, f"examples/audio ({len(clips)} clips)", reason)


def load_corpus(directory: Path) -> Corpus:
    """Read a built corpus (`manifest.jsonl` + `wav/`); raise FileNotFoundError if not built."""
    manifest = directory / "manifest.jsonl"
    clips = []
    with manifest.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            clips.append(Clip(row["id"], directory / row["wav"], row["text"], float(row["dur"])))
    return Corpus("asterisk", tuple(clips), f"Asterisk prompts in {directory} ({len(clips)} clips)")


def resolve_corpus(directory: Path | None = None, *, build: bool = True) -> Corpus:
    """The Asterisk corpus from `directory` (default cache dir), built there if missing; the
    examples corpus (with `fallback_reason` set) if it cannot be built."""
    directory = Path(directory) if directory else default_cache_dir()
    if (directory / "manifest.jsonl").exists():
        return load_corpus(directory)
    if not build:
        return example_corpus(f"no corpus at {directory} and building was not allowed")
    try:
        build_asterisk_corpus(directory)
    except CorpusUnavailable as exc:
        log.warning("Asterisk corpus unavailable (%s): falling back to examples/audio", exc)
        return example_corpus(str(exc))
    return load_corpus(directory)


def build_asterisk_corpus(directory: Path) -> int:
    """Download, decode and write the corpus into `directory`; return the number of clips."""
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise CorpusUnavailable(f"`{tool}` is not installed (a Debian-family system is needed)")
    try:
        import av  # noqa: F401  (PyAV decodes G.722)
    except ImportError:
        raise CorpusUnavailable("PyAV is not installed (pip install av)") from None
    wav_dir = directory / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="roomscribe-corpus-") as work:
        root, versions = _fetch_packages(Path(work))
        rows: list[dict[str, Any]] = []
        for name, text in _read_transcripts(root / _TRANSCRIPTS):
            src = root / _SOUNDS / f"{name}.g722"
            if not src.exists():
                continue
            clip_id = name.replace("/", "__")
            dst = wav_dir / f"{clip_id}.wav"
            if not dst.exists():
                _write_wav(dst, decode_g722(src))
            rows.append({"id": clip_id, "wav": f"wav/{dst.name}", "dur": round(_wav_duration(dst), 3),
                         "text": text, "licence": LICENCE})  # fmt: skip
    if not rows:
        raise CorpusUnavailable("the packages held no usable prompts")
    (directory / "source.json").write_text(json.dumps({"packages": versions, "licence": LICENCE}, indent=1))
    tmp = directory / "manifest.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(directory / "manifest.jsonl")
    log.info("built %d clips (%.0f s) in %s", len(rows), sum(r["dur"] for r in rows), directory)
    return len(rows)


def _fetch_packages(work: Path) -> tuple[Path, dict[str, str]]:
    """`apt-get download` the packages into `work` and unpack them under `work/root`."""
    try:
        subprocess.run(["apt-get", "download", *PACKAGES], cwd=work, check=True, capture_output=True, text=True,
                       timeout=600)  # fmt: skip
    except subprocess.CalledProcessError as exc:
        raise CorpusUnavailable(f"apt-get download failed: {exc.stderr.strip()[-300:]}") from None
    except subprocess.TimeoutExpired:
        raise CorpusUnavailable("apt-get download timed out") from None
    root = work / "root"
    versions = {}
    for deb in sorted(work.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        versions[deb.name.split("_")[0]] = deb.name.split("_")[1]
    return root, versions


def _read_transcripts(path: Path) -> list[tuple[str, str]]:
    """(prompt name, spoken text) pairs; bracketed notes dropped, silence and tones skipped."""
    out = []
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    for line in lines:
        if not line.strip() or line.startswith(";"):
            continue
        name, _, text = line.partition(":")
        name = name.strip()
        text = " ".join(re.sub(r"\[[^\]]*\]|<[^>]*>", " ", text).split())
        if name.startswith("silence/") or not re.search(r"[A-Za-z0-9]", text):
            continue
        out.append((name, text))
    return out


def decode_g722(path: Path) -> np.ndarray:
    """Decode a raw G.722 file to 16 kHz mono int16 with PyAV."""
    import av

    chunks: list[np.ndarray] = []
    with av.open(str(path), format="g722") as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        for frame in container.decode(stream):
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
        chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    return np.concatenate(chunks).astype("<i2") if chunks else np.zeros(0, dtype="<i2")


def _write_wav(path: Path, pcm: np.ndarray) -> None:
    tmp = path.with_suffix(".tmp")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())
    tmp.replace(path)


def _wav_duration(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


def main(argv: list[str] | None = None) -> int:
    """Build the corpus into DIR (default: the cache dir) and print a one-line summary."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = sys.argv[1:] if argv is None else argv
    corpus = resolve_corpus(Path(args[0]) if args else None)
    fallback = f" (FALLBACK: {corpus.fallback_reason})" if corpus.fallback_reason else ""
    print(f"{corpus.description}: {corpus.duration_s / 60:.1f} min{fallback}")
    return 0 if corpus.fallback_reason is None else 1


if __name__ == "__main__":
    sys.exit(main())
