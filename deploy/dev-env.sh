#!/usr/bin/env bash
# Create (or update) the project's virtualenv in .venv with Spinlet and its dev tools.
# Prints nothing on success but progress; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}

# The README's examples use curl and jq; functions with network need iptables (to close the
# host to them).
missing=()
for tool in curl jq iptables; do
  command -v "$tool" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing ${missing[*]} (apt-get)" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
  else
    echo "[setup] not installed (the README's examples or networked functions need them): ${missing[*]}" >&2
  fi
fi
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($python --version)" >&2
  "$python" -m venv .venv
fi
stamp=.venv/.spinlet-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] installing spinlet and its dependencies into .venv" >&2
  .venv/bin/python -m pip install -q --upgrade pip >&2
  .venv/bin/python -m pip install -q -e ".[dev]" >&2
  touch "$stamp"
fi
