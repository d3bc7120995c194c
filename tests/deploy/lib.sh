# Shared shell functions of the tests/deploy scripts (sourced, not run).
# Every test installs what it needs itself: it may run on a fresh Debian 12
# as root with only the Debian archive and the npm registry reachable.

repo_root() { cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd; }

fail() { echo "FAIL: $*" >&2; exit 1; }
note() { echo "--- $*"; }

# apt_need PACKAGE...: install the Debian packages that are missing.
apt_need() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  [[ $(id -u) -eq 0 ]] || fail "need Debian packages ${missing[*]} (run as root to install them)"
  note "apt-get install ${missing[*]}"
  if [[ ! -f /var/lib/apt/lists/lock ]] || ! compgen -G '/var/lib/apt/lists/*Packages' >/dev/null; then
    apt-get -o DPkg::Lock::Timeout=600 update -qq
  fi
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null
}

# free_port: a TCP port nobody listens on right now.
free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_for DESCRIPTION SECONDS COMMAND...: poll COMMAND until it succeeds.
wait_for() {
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { echo "timed out after ${secs}s waiting for $what" >&2; return 1; }
    sleep 0.5
  done
}

# build_dir: where the daemons were built (COOKIEFS_BUILD_DIR, else ../build
# relative to the ctest working dir, else the first build*/ of the repo that
# holds all three binaries).
find_build_dir() {
  local root; root=$(repo_root)
  local cands=("${COOKIEFS_BUILD_DIR:-}" "$root/build" "$root"/build-*)
  for d in "${cands[@]}"; do
    [[ -n "$d" && -x "$d/storage-service/storage-service" && -x "$d/cookiefs/cookiefs" ]] && { echo "$d"; return 0; }
  done
  return 1
}

# ---- a local stack: private PostgreSQL + storage-service + one cookiefs mount.
# start_stack DIR sets STACK_DIR, STORAGE_METRICS, MOUNT_METRICS, MOUNT_DIR and
# registers stop_stack on EXIT. Needs root (FUSE) and the built binaries.
start_stack() {
  STACK_DIR=$1
  local root build; root=$(repo_root)
  build=$(find_build_dir) || fail "no build dir with storage-service and cookiefs (set COOKIEFS_BUILD_DIR)"
  apt_need postgresql-15 fuse3 curl
  mkdir -p "$STACK_DIR"/{logs,cache,mnt}
  trap stop_stack EXIT
  local pg_port storage_port
  pg_port=$(free_port); storage_port=$(free_port)
  STORAGE_METRICS=127.0.0.1:$(free_port); MOUNT_METRICS=127.0.0.1:$(free_port)
  STORAGE_ADDR=127.0.0.1:$storage_port
  MOUNT_DIR=$STACK_DIR/mnt
  note "PostgreSQL on port $pg_port"
  DATABASE_URL=$("$root/scripts/pg-cluster.sh" start "$STACK_DIR/pg" "$pg_port") || fail "PostgreSQL did not start"
  COOKIEFS_DATABASE_URL=$DATABASE_URL "$build/storage-service/storage-service" \
    --listen "$STORAGE_ADDR" --metrics-listen "$STORAGE_METRICS" \
    >"$STACK_DIR/logs/storage-service.log" 2>&1 &
  STORAGE_PID=$!
  wait_for "storage-service metrics" 60 curl -sf "http://$STORAGE_METRICS/metrics" \
    || { tail -20 "$STACK_DIR/logs/storage-service.log"; fail "storage-service did not start"; }
  "$build/cookiefs/cookiefs" --storage "$STORAGE_ADDR" --engine-id deploy-test-engine \
    --cache-dir "$STACK_DIR/cache" --metrics-listen "$MOUNT_METRICS" -f "$MOUNT_DIR" \
    >"$STACK_DIR/logs/cookiefs.log" 2>&1 &
  MOUNT_PID=$!
  wait_for "the cookiefs mount" 60 test -d "$MOUNT_DIR/.cookiefs" \
    || { tail -20 "$STACK_DIR/logs/cookiefs.log"; fail "cookiefs did not mount"; }
  wait_for "cookiefs metrics" 30 curl -sf "http://$MOUNT_METRICS/metrics" || fail "no cookiefs metrics"
}

# jar_workload SESSION N: N cookie transactions into MOUNT_DIR/SESSION/cookies.sqlite
# (SQLite in the rollback-journal mode WebKit uses), then fsync the db.
jar_workload() {
  /usr/bin/python3 - "$MOUNT_DIR/$1" "$2" <<'PY'
import os, sqlite3, sys
d, n = sys.argv[1], int(sys.argv[2])
os.makedirs(d, exist_ok=True)
db = sqlite3.connect(os.path.join(d, "cookies.sqlite"))
db.execute("PRAGMA journal_mode=DELETE")
db.execute("CREATE TABLE IF NOT EXISTS moz_cookies (id INTEGER PRIMARY KEY, name TEXT, value TEXT, host TEXT)")
for i in range(n):
    with db:
        db.execute("INSERT INTO moz_cookies (name, value, host) VALUES (?, ?, ?)", (f"c{i}", "v" * 64, "example.test"))
db.close()
fd = os.open(os.path.join(d, "cookies.sqlite"), os.O_RDONLY)
os.fsync(fd)  # returns only once the session is committed in PostgreSQL
os.close(fd)
PY
}

stop_stack() {
  [[ -n "${MOUNT_PID:-}" ]] && kill -TERM "$MOUNT_PID" 2>/dev/null && wait "$MOUNT_PID" 2>/dev/null
  mountpoint -q "$MOUNT_DIR" 2>/dev/null && fusermount3 -uz "$MOUNT_DIR"
  [[ -n "${STORAGE_PID:-}" ]] && kill -TERM "$STORAGE_PID" 2>/dev/null && wait "$STORAGE_PID" 2>/dev/null
  [[ -n "${STACK_DIR:-}" ]] && "$(repo_root)/scripts/pg-cluster.sh" stop "$STACK_DIR/pg"
  MOUNT_PID= STORAGE_PID=
  [[ -n "${STACK_DIR:-}" && -z "${KEEP_TEST_DIR:-}" ]] && rm -rf "$STACK_DIR"
  return 0
}
