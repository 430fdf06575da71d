#!/usr/bin/env bash
# Start (or stop) a throwaway PostgreSQL server on loopback for the registry tests.
#   scripts/postgres-testbed.sh start   -> prints the SQLAlchemy URL to use as LLMJOBS_TEST_POSTGRES_URL
#   scripts/postgres-testbed.sh stop
# Installs Debian's postgresql package when it is missing. Runs the server as the 'postgres' user with
# trust authentication on 127.0.0.1 only; its data lives under .testbed/postgres in the repository.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
data="$here/.testbed/postgres"
port="${LLMJOBS_TEST_PG_PORT:-55432}"

pgbin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] && echo "$d"
}

install() {
  if [ -z "$(pgbin)" ]; then
    echo "installing postgresql from Debian packages..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
  fi
}

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-start}" in
  start)
    install
    bin=$(pgbin)
    mkdir -p "$data"
    [ "$(id -u)" = 0 ] && chown -R postgres: "$here/.testbed/postgres"
    if [ ! -f "$data/PG_VERSION" ]; then
      as_pg "$bin/initdb" -D "$data" -U postgres --auth=trust >/dev/null
    fi
    if ! as_pg "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
      as_pg "$bin/pg_ctl" -D "$data" -w -l "$data/server.log" \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $data -c max_connections=200 -c fsync=off" start >/dev/null
    fi
    echo "postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    bin=$(pgbin)
    [ -n "$bin" ] && [ -f "$data/PG_VERSION" ] && as_pg "$bin/pg_ctl" -D "$data" -m fast stop >/dev/null || true
    ;;
  *)
    echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
