#!/usr/bin/env bash
# From a fresh clone to a running Spinlet that has invoked a function:
# installs Spinlet into .venv, builds the runtime image if it is missing (bootstrapping a base
# image from Debian packages when no registry is reachable), starts `spinlet serve` in the
# background on the embedded defaults (SQLite, local Docker), deploys functions/hello.py and
# invokes it.
set -euo pipefail
cd "$(dirname "$0")/.."

bash deploy/dev-env.sh
export PATH="$PWD/.venv/bin:$PATH"
data_dir=${SPINLET_DATA_DIR:-$HOME/.spinlet}
url=${SPINLET_URL:-http://127.0.0.1:7070}
mkdir -p "$data_dir"

healthy() { python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/health', timeout=1)" "$url" 2>/dev/null; }

spinlet runtimes build
if healthy; then
  echo "[quickstart] a Spinlet server already answers at $url"
else
  echo "[quickstart] starting spinlet serve (log: $data_dir/serve.log)"
  port=${url##*:}
  nohup spinlet serve --port "${port%%/*}" --data-dir "$data_dir" --no-build \
    >"$data_dir/serve.log" 2>&1 &
  echo $! >"$data_dir/serve.pid"
  for _ in $(seq 1 100); do healthy && break; sleep 0.2; done
  healthy || { echo "[quickstart] the server did not start; see $data_dir/serve.log" >&2; exit 1; }
fi

spinlet functions get hello >/dev/null 2>&1 || spinlet functions create hello functions/hello.py
echo "[quickstart] \$ spinlet invoke hello --input '{\"name\": \"Spinlet\"}'"
spinlet invoke hello --input '{"name": "Spinlet"}'
echo "[quickstart] Spinlet is running at $url; stop it with: kill \$(cat $data_dir/serve.pid)"
