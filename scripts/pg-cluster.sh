#!/usr/bin/env bash
# A private PostgreSQL 15 cluster in a directory of its own, for the quick
# start, the tests and the benchmarks. Never touches the system cluster.
#
#   pg-cluster.sh start DIR PORT   init (first time) and start; prints the database URL
#   pg-cluster.sh stop DIR         fast shutdown
#   pg-cluster.sh url DIR          prints the database URL of a started cluster
#
# PostgreSQL refuses to run as root, so as root the cluster runs as the
# `postgres` system user (created by the postgresql package).
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
cmd=${1:-}
dir=${2:-}
[[ -n "$cmd" && -n "$dir" ]] || { echo "usage: $0 start DIR PORT | stop DIR | url DIR" >&2; exit 2; }

as_owner() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
  start)
    port=${3:?port required}
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [[ $(id -u) -eq 0 ]]; then
      chown postgres: "$dir"; chmod 0700 "$dir"
      # The postgres user must be able to reach DIR: allow traversal (not listing) of its parents.
      p=$(dirname "$dir")
      while [[ "$p" != "/" ]]; do chmod o+x "$p"; p=$(dirname "$p"); done
    fi
    if [[ ! -f "$dir/data/PG_VERSION" ]]; then
      as_owner "$PGBIN/initdb" -D "$dir/data" -U cookiefs --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
      cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
max_connections = 200
shared_buffers = 128MB
fsync = on
synchronous_commit = on
CONF
    fi
    echo "$port" >"$dir/port"
    if ! as_owner "$PGBIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
      as_owner "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -o "-p $port" -w -t 60 start >/dev/null \
        || { tail -20 "$dir/postgres.log" >&2; exit 1; }
    fi
    if ! as_owner "$PGBIN/../bin/psql" -h "$dir" -p "$port" -U cookiefs -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname='cookiefs'" | grep -q 1; then
      as_owner "$PGBIN/createdb" -h "$dir" -p "$port" -U cookiefs cookiefs
    fi
    echo "postgresql://cookiefs@127.0.0.1:$port/cookiefs"
    ;;
  stop)
    [[ -d "$dir/data" ]] || exit 0
    as_owner "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    ;;
  url)
    echo "postgresql://cookiefs@127.0.0.1:$(cat "$dir/port")/cookiefs"
    ;;
  *) echo "usage: $0 start DIR PORT | stop DIR | url DIR" >&2; exit 2 ;;
esac
