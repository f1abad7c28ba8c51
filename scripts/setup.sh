#!/usr/bin/env bash
# Set up .venv from the repo's own files: the package with its test extra (pytest, ruff, mypy)
# and the pinned npm packages. Idempotent; scripts/test.sh and .ci/run call it.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
.venv/bin/python -m pip install --quiet -e '.[test]'

# livekit-client for the browser tests, pinned in package-lock.json.
if [ -f package-lock.json ] && command -v npm >/dev/null 2>&1; then
  npm ci --silent --no-audit --no-fund
fi
