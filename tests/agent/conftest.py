"""Shared fixtures for the pipeline tests: one real engine per test session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The suite runs with --import-mode=importlib; make the sibling helper module importable.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from agent.asr import AsrEngine
from agent.config import AsrConfig


@pytest.fixture(scope="session")
def engine():
    """The real tiny.en engine, loaded once (the engine is not bound to any event loop)."""
    eng = AsrEngine(AsrConfig())
    eng.start_sync()
    yield eng
    eng.close_sync()
