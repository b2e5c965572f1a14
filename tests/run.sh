#!/usr/bin/env bash
# The whole test suite, from a fresh machine with Docker: installs what is missing (the
# virtualenv, PostgreSQL, the runtime image), checks lint and types, then runs every tier.
#
#   bash tests/run.sh [pytest args…]
set -euo pipefail
cd "$(dirname "$0")/.."

# Each stage says how long the one before it took, and the last line sums them up.
run_started=$(date +%s)
stage_name="setup"
stage_started=$run_started
stage() {
  echo "[test] $stage_name took $(( $(date +%s) - stage_started ))s"
  stage_name=$1
  stage_started=$(date +%s)
  echo "[test] $stage_name"
}

bash deploy/dev-env.sh
export PATH="$PWD/.venv/bin:$PATH"

if [ -z "${SPINLET_TEST_POSTGRES_URL:-}" ]; then
  SPINLET_TEST_POSTGRES_URL=$(bash deploy/ensure-postgres.sh)
  export SPINLET_TEST_POSTGRES_URL
fi

stage "runtime image"
spinlet runtimes build

stage "ruff"
ruff check platform tests runtimes functions
ruff format --check platform tests runtimes
stage "mypy"
mypy

stage "pytest"
pytest "$@"
if [ $# -eq 0 ]; then
  # The store tests ran on both stores already; the API and services tiers once more, on a fresh
  # PostgreSQL database each (functions as local processes: the store is what differs).
  stage "pytest: the API and services on PostgreSQL"
  SPINLET_TEST_STORE=postgres pytest -q tests/integration -m "not docker and not postgres"
fi
echo "[test] $stage_name took $(( $(date +%s) - stage_started ))s"
echo "[test] the whole suite took $(( $(date +%s) - run_started ))s"
