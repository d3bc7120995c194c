#!/usr/bin/env bash
# Stops what scripts/quickstart.sh started (and only that: processes are found
# through the pid files in .state/, checked against their executable first):
# the cookiefs mount (SIGTERM unmounts it cleanly), storage-service, PostgreSQL.
#   stop.sh [--quiet]
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
state="$root/.state"
quiet=false
[[ "${1:-}" == "--quiet" ]] && quiet=true
say() { $quiet || echo "stop: $*"; }

# Sends SIGTERM to the pid in $1.pid if it still runs binary $2; waits up to 30 s,
# then SIGKILL.
stop_daemon() {
  local name=$1 binary=$2 pidfile="$state/$1.pid" pid exe
  [[ -f "$pidfile" ]] || return 0
  pid=$(cat "$pidfile")
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
  if [[ -n "$pid" && "${exe% (deleted)}" == *"/$binary" ]]; then
    say "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 150); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      say "$name did not stop in 30 s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidfile"
}

stop_daemon cookiefs cookiefs
# A mount whose daemon died leaves "Transport endpoint is not connected" behind.
if [[ -d "$state/mnt" ]] && grep -qs " $state/mnt " /proc/mounts; then
  say "unmounting stale .state/mnt"
  fusermount3 -u "$state/mnt" 2>/dev/null || umount -l "$state/mnt" 2>/dev/null || true
fi
stop_daemon storage-service storage-service
if [[ -d "$state/pg/data" ]]; then
  say "stopping PostgreSQL"
  bash "$root/scripts/pg-cluster.sh" stop "$state/pg"
fi
say "done"
