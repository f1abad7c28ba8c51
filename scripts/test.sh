#!/usr/bin/env bash
# Set up .venv from the repo's own files (scripts/setup.sh: the test extra, with ruff and mypy for
# scripts/check.sh, and the npm packages) and run the whole test suite.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

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
