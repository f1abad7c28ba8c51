#!/usr/bin/env bash
# Lint and type checks, configured in pyproject.toml: ruff (the chosen rule set), mypy (strict for
# control/schema.py, agent/ and tokens/), and no `type: ignore` without its reason on the line
# (`# type: ignore[code]  # why`). Exits non-zero on any finding; CI runs it before the tests.
# Needs .venv with the test extra (bash scripts/setup.sh, or bash scripts/test.sh once).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
if ! "$PY" -m ruff --version >/dev/null 2>&1 || ! "$PY" -m mypy --version >/dev/null 2>&1; then
  echo "ruff/mypy missing in $PY: run bash scripts/setup.sh (pip install -e '.[test]')" >&2
  exit 2
fi

status=0
echo "== ruff check"
"$PY" -m ruff check . || status=1
echo "== mypy"
"$PY" -m mypy || status=1
echo "== type: ignore comments carry a reason"
if git ls-files -z '*.py' | xargs -0 grep -nE '#[[:space:]]*type:[[:space:]]*ignore(\[[^]]*\])?[[:space:]]*$'; then
  echo "^ each type: ignore needs its reason on the line: # type: ignore[code]  # why" >&2
  status=1
else
  echo "ok"
fi
exit "$status"
