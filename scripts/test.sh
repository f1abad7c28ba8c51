#!/usr/bin/env bash
# Set up .venv from the repo's own files and run the whole test suite.
# Usage: bash scripts/test.sh [pytest args...]
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

if [ ! -x /usr/bin/chromium ]; then
  echo "!!! /usr/bin/chromium is missing: browser tests will be SKIPPED (apt-get install chromium to run them)." >&2
fi

set +e
OPENBLAS_NUM_THREADS=1 .venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests" >&2
  exit 0
fi
exit "$status"
