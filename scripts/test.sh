#!/usr/bin/env bash
# Runs the whole suite against throwaway services (started by
# tests/harness/plugin.py).  pytest's exit 5 ("no tests collected") is a
# failure here, as it is in CI.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest "$@"
code=$?
if [ "$code" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$code"
