#!/usr/bin/env bash
# The whole test suite, from a fresh machine with Docker: installs what is missing (the
# virtualenv, PostgreSQL, the runtime image), checks lint and types, then runs every tier.
#
#   bash tests/run.sh [pytest args…]
set -euo pipefail
cd "$(dirname "$0")/.."

bash deploy/dev-env.sh
export PATH="$PWD/.venv/bin:$PATH"

if [ -z "${SPINLET_TEST_POSTGRES_URL:-}" ]; then
  SPINLET_TEST_POSTGRES_URL=$(bash deploy/ensure-postgres.sh)
  export SPINLET_TEST_POSTGRES_URL
fi

echo "[test] runtime image"
spinlet runtimes build

echo "[test] ruff"
ruff check platform tests runtimes functions
ruff format --check platform tests runtimes
echo "[test] mypy"
mypy

echo "[test] pytest"
started=$(date +%s)
pytest "$@"
if [ $# -eq 0 ]; then
  # The store tests ran on both stores already; the API and services tiers once more, on a fresh
  # PostgreSQL database each (functions as local processes: the store is what differs).
  echo "[test] pytest: the API and services on PostgreSQL"
  SPINLET_TEST_STORE=postgres pytest -q tests/integration -m "not docker and not postgres"
fi
echo "[test] pytest took $(( $(date +%s) - started ))s"
