#!/usr/bin/env bash
# Starts and stops a throwaway PostgreSQL server (Debian's postgresql package) for development
# and tests, on 127.0.0.1:$SENTINEL_POSTGRES_PORT (5433), with user `sentinel`, password
# `sentinel`, database `sentinel`. Its data lives in /tmp/cmcd-sentinel-pg-PORT/ and is deleted
# on stop. PostgreSQL refuses to run as root, so the server runs as the `postgres` user.
#
#   scripts/postgres/postgres.sh start     # prints the URL on stdout
#   scripts/postgres/postgres.sh stop
set -euo pipefail
. "$(cd "$(dirname "$0")/.." && pwd)/lib.sh"
port=${SENTINEL_POSTGRES_PORT:-5433}
state=/tmp/cmcd-sentinel-pg-$port
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

stop() {
    if [ -f "$state/data/postmaster.pid" ]; then
        as_postgres "$bindir/pg_ctl" -D "$state/data" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$state"
}

case "${1:-}" in
start)
    [ -n "$bindir" ] || { echo "postgres: not installed (apt-get install postgresql)" >&2; exit 1; }
    stop
    mkdir -p "$state"
    [ "$(id -u)" = 0 ] && chown postgres "$state"
    echo sentinel >"$state/pw"
    [ "$(id -u)" = 0 ] && chown postgres "$state/pw"
    as_postgres "$bindir/initdb" -D "$state/data" -U sentinel --pwfile="$state/pw" -A scram-sha-256 >"$state/initdb.log" 2>&1 \
        || { cat "$state/initdb.log" >&2; exit 1; }
    ( close_inherited_fds; as_postgres "$bindir/pg_ctl" -D "$state/data" -l "$state/server.log" -w -t 30 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $state -c fsync=off" start </dev/null >/dev/null 2>&1 ) \
        || { tail -n 20 "$state/server.log" >&2; exit 1; }
    PGPASSWORD=sentinel psql -h 127.0.0.1 -p "$port" -U sentinel -d postgres -qc "CREATE DATABASE sentinel" >/dev/null
    echo "postgres: listening on 127.0.0.1:$port" >&2
    echo "postgres://sentinel:sentinel@127.0.0.1:$port/sentinel?sslmode=disable"
    ;;
stop) stop ;;
*) echo "usage: $0 start | stop" >&2; exit 2 ;;
esac
