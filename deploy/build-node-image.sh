#!/usr/bin/env bash
# Build the image of a Spinlet node (the control plane), offline-capable:
#
#   deploy/build-node-image.sh [TAG]        (default spinlet/node:latest)
#
# The wheels of Spinlet and its dependencies are built on this machine (where the package index
# is reachable) and copied into the image: nothing inside the build reaches the network. The base
# is the one the runtime image uses: the official Python image when it can be pulled, else the
# Debian base bootstrapped from the machine's own apt mirror (built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-spinlet/node:latest}

bash deploy/dev-env.sh
export PATH="$PWD/.venv/bin:$PATH"

context=$(mktemp -d "${TMPDIR:-/tmp}/spinlet-node.XXXXXX")
trap 'rm -rf "$context"' EXIT
echo "[node-image] building wheels of spinlet and its dependencies" >&2
had_build=$([ -e build ] && echo yes || true)
python -m pip wheel --quiet --wheel-dir "$context/wheels" . >&2
[ -n "$had_build" ] || rm -rf build  # setuptools' scratch directory
python -m pip download --quiet --dest "$context/wheels" pip >&2
cp deploy/node/Dockerfile "$context/"

base=$(python - <<'PY'
import os, sys
import docker
from spinlet.runtime.images import DEFAULT_BASE, provide_base
client = docker.from_env()
wanted = os.environ.get("SPINLET_RUNTIME_BASE") or DEFAULT_BASE
print(provide_base(client, wanted, progress=lambda line: print(line, file=sys.stderr)))
PY
)
echo "[node-image] docker build $tag from $base" >&2
docker build --quiet --build-arg "BASE=$base" --tag "$tag" "$context" >/dev/null
echo "[node-image] built $tag" >&2
echo "$tag"
