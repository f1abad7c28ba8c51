"""`roomscribe models` and the model check `serve` and `worker` run before they start."""

from __future__ import annotations

import secrets

import pytest

from roomscribe.cli import main

pytestmark = pytest.mark.timeout(60)
NO_ENV_FILE = ["--env-file", "/nonexistent/.env"]


def test_models_lists_what_is_installed_and_marks_the_configured_one(monkeypatch, capsys) -> None:
    monkeypatch.setenv("ROOMSCRIBE_MODEL", "tiny.en")
    monkeypatch.setenv("ROOMSCRIBE_MODEL_PATH", "")
    assert main([*NO_ENV_FILE, "models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    tiny = next(line for line in lines if "tiny.en" in line)
    assert tiny.startswith("*") and "English only" in tiny and "MB" in tiny
    assert any(line.split()[0] == "base" for line in lines)  # installed (multilingual) or how to install it


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"ROOMSCRIBE_MODEL": "whisper-huge"}, "unknown model 'whisper-huge'"),
        ({"ROOMSCRIBE_MODEL": "tiny.en", "ROOMSCRIBE_LANGUAGE": "de"}, "English-only"),
    ],
)
def test_serve_refuses_a_model_it_cannot_use_before_starting(monkeypatch, capsys, env, says) -> None:
    monkeypatch.setenv("ROOMSCRIBE_CONTROL_SECRET", secrets.token_urlsafe(32))
    monkeypatch.setenv("ROOMSCRIBE_MODEL_PATH", "")
    monkeypatch.setenv("ROOMSCRIBE_LANGUAGE", "en")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main([*NO_ENV_FILE, "serve", "--port", "0"]) == 2
    assert says in capsys.readouterr().err
