#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for the distributed-sweep test (tests/test_ablate_postgres.py).
#
#   eval "$(.ci/postgres.sh)"     # exports RELKD_TEST_POSTGRES_URL
#
# - Installs PostgreSQL from Debian's packages when no initdb is found (needs root; apt-get).
# - Runs the server as the `postgres` user when called as root, on 127.0.0.1:${RELKD_PG_PORT:-5433},
#   with a throwaway data directory under ${RELKD_PG_DIR:-/tmp/relkd-pg} (fsync off: test data only).
# - Creates the role and database `relkd` with a random password kept in $RELKD_PG_DIR/password (0600).
# - Idempotent: a server already running from that directory is reused (same URL), in well under a second.
# - stdout carries exactly one line, `export RELKD_TEST_POSTGRES_URL=...`, the only place the URL
#   (and its password) is written; everything else goes to stderr and contains no secret.
set -euo pipefail
port=${RELKD_PG_PORT:-5433}
dir=${RELKD_PG_DIR:-/tmp/relkd-pg}
data="$dir/data"

log() { echo "postgres.sh: $*" >&2; }

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
bin=$(find_bin)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  log "installing PostgreSQL from Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql; } >&2
  bin=$(find_bin)
fi

# Run a command as the server's owner: `postgres` when we are root, otherwise ourselves.
if [ "$(id -u)" = 0 ]; then
  as_owner() { runuser -u postgres -- "$@"; }
  owner=postgres
else
  as_owner() { "$@"; }
  owner=$(id -un)
fi

running() { [ -f "$data/PG_VERSION" ] && as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; }

if ! running; then
  log "initialising a throwaway cluster in $data (port $port)"
  rm -rf "$dir"
  mkdir -p "$dir"
  chmod 0755 "$dir"
  umask 077
  head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/password"
  umask 022
  if [ "$(id -u)" = 0 ]; then chown "$owner" "$dir"; fi
  as_owner "$bin/initdb" -D "$data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C.UTF-8 >/dev/null
  as_owner "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 start \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
-c full_page_writes=off -c max_connections=200" >/dev/null
  # The password goes through stdin, never through a command line (visible in ps).
  as_owner "$bin/psql" -q -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE ROLE relkd LOGIN PASSWORD '$(cat "$dir/password")';
CREATE DATABASE relkd OWNER relkd;
SQL
  log "server started"
else
  log "reusing the server already running from $data"
fi

echo "export RELKD_TEST_POSTGRES_URL=postgresql://relkd:$(cat "$dir/password")@127.0.0.1:$port/relkd"
