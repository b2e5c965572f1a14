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

if [ $# -gt 0 ]; then
  stage "pytest"
  pytest "$@"
else
  # Two groups at once: the tests in containers (mostly waiting on the engine) and the others;
  # then, in the second group, the API and services tiers once more on PostgreSQL, a fresh
  # database each (functions as local processes: the store is what differs; the store tests
  # ran on both stores already). The second group's output is shown when both have ended.
  stage "pytest: in containers, and beside them the rest (then the API and services on PostgreSQL)"
  others_log=$(mktemp "${TMPDIR:-/tmp}/spinlet-tests.XXXXXX")
  (
    pytest -p no:cacheprovider -m "not docker" &&
      SPINLET_TEST_STORE=postgres pytest -p no:cacheprovider -q tests/integration \
        -m "not docker and not postgres"
  ) >"$others_log" 2>&1 &
  others=$!
  containers_status=0
  pytest -m docker || containers_status=$?
  others_status=0
  wait "$others" || others_status=$?
  echo "[test] the tests without containers, then the API and services on PostgreSQL:"
  cat "$others_log"
  rm -f "$others_log"
  if [ "$containers_status" -ne 0 ] || [ "$others_status" -ne 0 ]; then
    echo "[test] failed: in containers exit $containers_status, the others exit $others_status"
    exit 1
  fi
fi
echo "[test] $stage_name took $(( $(date +%s) - stage_started ))s"
echo "[test] the whole suite took $(( $(date +%s) - run_started ))s"
