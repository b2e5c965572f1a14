#!/usr/bin/env bash
# Make sure a local PostgreSQL server is running for Spinlet's tests (or a single-machine
# setup), installing Debian's `postgresql` package when it is missing. Creates a login role
# `spinlet` (password `spinlet`, may create databases) and prints its URL on stdout:
#
#   export SPINLET_TEST_POSTGRES_URL=$(deploy/ensure-postgres.sh)
set -euo pipefail

say() { printf '[postgres] %s\n' "$*" >&2; }
as_postgres() { if [ "$(id -un)" = postgres ]; then "$@"; else runuser -u postgres -- "$@"; fi; }

if ! command -v pg_lsclusters >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    say "PostgreSQL is not installed; run as root or: apt-get install postgresql"
    exit 1
  fi
  say "installing Debian's postgresql package"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi

read -r version cluster port status _ < <(pg_lsclusters -h | head -n 1) || true
if [ -z "${version:-}" ]; then
  version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
  cluster=main
  say "creating cluster $version/$cluster"
  pg_createcluster "$version" "$cluster" >&2
  read -r version cluster port status _ < <(pg_lsclusters -h | head -n 1)
fi
if [ "$status" != online ]; then
  say "starting cluster $version/$cluster on port $port"
  pg_ctlcluster "$version" "$cluster" start >&2
fi
for _ in $(seq 1 60); do
  pg_isready -q -h 127.0.0.1 -p "$port" && break
  sleep 0.5
done
pg_isready -q -h 127.0.0.1 -p "$port" || { say "PostgreSQL did not become ready"; exit 1; }

as_postgres psql -q -p "$port" -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'spinlet') THEN
    CREATE ROLE spinlet LOGIN CREATEDB PASSWORD 'spinlet';
  END IF;
END $$;
SQL
as_postgres psql -q -p "$port" -tc "SELECT 1 FROM pg_database WHERE datname = 'spinlet'" \
  | grep -q 1 || as_postgres createdb -p "$port" -O spinlet spinlet
say "ready on port $port"
echo "postgresql+asyncpg://spinlet:spinlet@127.0.0.1:$port/spinlet"
