#!/usr/bin/env bash
# Build a minimal Debian base image with python3, without any container registry:
# debootstrap a root filesystem from the Debian mirror this machine already uses, then
# `docker import` it.
#
#   deploy/bootstrap-base-image.sh [--tag TAG] [--suite SUITE] [--mirror URL]
#
# The mirror defaults to the one in the machine's apt configuration (deb822 files under
# /etc/apt/sources.list.d/ or the classic /etc/apt/sources.list); --mirror or
# SPINLET_DEBIAN_MIRROR override it.
set -euo pipefail

tag="spinlet/base-python:bookworm"
suite="bookworm"
mirror="${SPINLET_DEBIAN_MIRROR:-}"

while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag="$2"; shift 2 ;;
    --suite) suite="$2"; shift 2 ;;
    --mirror) mirror="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "bootstrap: unknown option $1" >&2; exit 2 ;;
  esac
done

say() { printf '[bootstrap] %s\n' "$*" >&2; }

apt_mirror() {
  # First deb822 stanza (Types: deb) whose Suites list the wanted suite.
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$suite" '
      function flush() { if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && uris != "") { split(uris, u, " "); print u[1]; found = 1; exit } types = suites = uris = "" }
      /^[[:space:]]*$/ { flush(); next }
      /^#/ { next }
      /^Types:/ { sub(/^Types:[[:space:]]*/, ""); types = $0 }
      /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); suites = $0 }
      /^URIs:/ { sub(/^URIs:[[:space:]]*/, ""); uris = $0 }
      END { if (!found) flush() }
    ' "$f" | head -n 1
  done | head -n 1
  # Classic one-line format.
  if [ -f /etc/apt/sources.list ]; then
    awk -v suite="$suite" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } if ($(i + 1) == suite) { print $i; exit } }' /etc/apt/sources.list
  fi
}

if [ -z "$mirror" ]; then
  mirror="$(apt_mirror | head -n 1)"
fi
if [ -z "$mirror" ]; then
  say "no Debian mirror for '$suite' found in the apt configuration; pass --mirror URL"
  exit 1
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing debootstrap (apt-get)"
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2
  else
    say "debootstrap is not installed; install it (apt-get install debootstrap) and run again"
    exit 1
  fi
fi

workdir="$(mktemp -d "${TMPDIR:-/tmp}/spinlet-rootfs.XXXXXX")"
cleanup() { rm -rf --one-file-system "$workdir"; }
trap cleanup EXIT

say "debootstrap $suite (minbase + python3) from $mirror; this takes a minute or two"
started=$(date +%s)
debootstrap --variant=minbase --include=python3 "$suite" "$workdir/rootfs" "$mirror" \
  | while IFS= read -r line; do printf '[debootstrap] %s\n' "$line" >&2; done

say "trimming caches"
rm -rf "$workdir/rootfs/var/cache/apt/archives/"*.deb "$workdir/rootfs/var/lib/apt/lists/"* \
  "$workdir/rootfs/usr/share/doc" "$workdir/rootfs/usr/share/man" "$workdir/rootfs/usr/share/locale"

say "docker import as $tag"
tar -C "$workdir/rootfs" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' \
  - "$tag" >/dev/null
say "done in $(( $(date +%s) - started ))s: $(docker run --rm --network none "$tag" python3 --version)"
echo "$tag"
