"""Pipeline tests: the helper module beside them is importable (the engine fixture is in tests/conftest.py)."""

from __future__ import annotations

import sys
from pathlib import Path

# The suite runs with --import-mode=importlib; make the sibling helper module importable.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


