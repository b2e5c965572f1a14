#!/usr/bin/env bash
# Build a minimal Debian base image for Spinlet's runtimes, without any container registry:
# debootstrap a root filesystem from the Debian mirror this machine already uses, then
# `docker import` it.
#
#   deploy/bootstrap-base-image.sh [--tag TAG] [--suite SUITE] [--include PKGS] [--mirror URL]
#   deploy/bootstrap-base-image.sh --suite trixie --include python3,nodejs --tag spinlet/base:trixie
#   deploy/bootstrap-base-image.sh --suite trixie --print-mirror   # only say which mirror
#
# Defaults: bookworm with python3, tagged spinlet/base-python:bookworm. The mirror is the one in
# the machine's apt configuration (deb822 files under sources.list.d/, or the classic
# sources.list, in $SPINLET_APT_DIR, default /etc/apt): the stanza listing SUITE, else the main
# Debian archive listed for another release (not its -security or -updates suites), used with
# SUITE. --mirror or SPINLET_DEBIAN_MIRROR override it.
set -euo pipefail

tag=""
suite="bookworm"
include="python3"
mirror="${SPINLET_DEBIAN_MIRROR:-}"
apt_dir="${SPINLET_APT_DIR:-/etc/apt}"
print_mirror=""

while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag="$2"; shift 2 ;;
    --suite) suite="$2"; shift 2 ;;
    --include) include="$2"; shift 2 ;;
    --mirror) mirror="$2"; shift 2 ;;
    --print-mirror) print_mirror=1; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "bootstrap: unknown option $1" >&2; exit 2 ;;
  esac
done
if [ -z "$tag" ]; then
  if [ "$suite" = "bookworm" ] && [ "$include" = "python3" ]; then
    tag="spinlet/base-python:bookworm"
  else
    tag="spinlet/base:$suite"
  fi
fi

say() { printf '[bootstrap] %s\n' "$*" >&2; }

# The URI of the first deb stanza (deb822) or line (classic) whose suites match: with "exact",
# one listing the wanted suite; with "main", one listing a plain release (no -security,
# -updates, -backports...): the main archive, whatever release it serves.
apt_uri() {
  local want="$1" f
  for f in "$apt_dir"/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$suite" -v want="$want" '
      function matches(list,   n, i, s) {
        n = split(list, s, " ")
        for (i = 1; i <= n; i++) {
          if (want == "exact" && s[i] == suite) return 1
          if (want == "main" && s[i] !~ /-/ && s[i] !~ /\//) return 1
        }
        return 0
      }
      function flush() { if (types ~ /(^| )deb( |$)/ && matches(suites) && uris != "") { split(uris, u, " "); print u[1]; found = 1; exit } types = suites = uris = "" }
      /^[[:space:]]*$/ { flush(); next }
      /^#/ { next }
      /^Types:/ { sub(/^Types:[[:space:]]*/, ""); types = $0 }
      /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); suites = $0 }
      /^URIs:/ { sub(/^URIs:[[:space:]]*/, ""); uris = $0 }
      END { if (!found) flush() }
    ' "$f" | head -n 1
  done
  if [ -f "$apt_dir/sources.list" ]; then
    awk -v suite="$suite" -v want="$want" '
      $1 == "deb" {
        i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
        s = $(i + 1)
        if ((want == "exact" && s == suite) || (want == "main" && s !~ /-/ && s !~ /\//)) { print $i; exit }
      }' "$apt_dir/sources.list"
  fi
}

apt_mirror() {
  local found
  found="$(apt_uri exact | head -n 1)"
  if [ -z "$found" ]; then
    found="$(apt_uri main | head -n 1)"
  fi
  printf '%s\n' "$found"
}

if [ -z "$mirror" ]; then
  mirror="$(apt_mirror)"
fi
if [ -z "$mirror" ]; then
  say "no Debian mirror found in the apt configuration ($apt_dir); pass --mirror URL"
  exit 1
fi
if [ -n "$print_mirror" ]; then
  echo "$mirror"
  exit 0
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

say "debootstrap $suite (minbase + $include) from $mirror; this takes a minute or two"
started=$(date +%s)
debootstrap --variant=minbase --include="$include" "$suite" "$workdir/rootfs" "$mirror" \
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
versions="$(docker run --rm --network none "$tag" sh -c 'for c in python3 node; do command -v "$c" >/dev/null && printf "%s %s; " "$c" "$("$c" --version 2>&1)"; done; true')"
say "done in $(( $(date +%s) - started ))s: ${versions%; }"
echo "$tag"
