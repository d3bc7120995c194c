#!/usr/bin/env bash
# Quick start: install what is missing, build, and run the whole stack locally:
#   - a private PostgreSQL 15 cluster in .state/pg (scripts/pg-cluster.sh),
#   - tokens for the mount (engine), the shim (manager) and an operator in
#     .state/auth/ (0700; made fresh on every run) and the credentials file
#     listing their hashes, .state/auth/credentials.yaml,
#   - storage-service on 127.0.0.1:7070 with auth.mode tokens (log:
#     .state/storage-service.log),
#   - a cookiefs mount at .state/mnt with its cache in .state/cache, when the
#     cookiefs binary is part of the build (log: .state/cookiefs.log).
# Re-running it stops what it started before and starts again. Stop with
# scripts/stop.sh. Ports may be changed with COOKIEFS_PG_PORT,
# COOKIEFS_STORAGE_PORT, COOKIEFS_STORAGE_METRICS_PORT, COOKIEFS_MOUNT_METRICS_PORT.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
state="$root/.state"
build="$root/build"
pg_port=${COOKIEFS_PG_PORT:-55432}
storage_port=${COOKIEFS_STORAGE_PORT:-7070}
storage_metrics_port=${COOKIEFS_STORAGE_METRICS_PORT:-9102}
mount_metrics_port=${COOKIEFS_MOUNT_METRICS_PORT:-9101}
deadline_s=60

say() { printf '\033[1mquickstart:\033[0m %s\n' "$*"; }
die() { printf 'quickstart: %s\n' "$*" >&2; exit 1; }

# Polls a condition (a shell command) until it holds or deadline_s passes.
wait_for() {
  local end=$((SECONDS + deadline_s))
  until "$@"; do
    ((SECONDS < end)) || return 1
    sleep 0.2
  done
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
alive() { kill -0 "$1" 2>/dev/null; }

say "checking packages"
bash "$root/scripts/ensure-packages.sh"

say "building (build/)"
cmake -S "$root" -B "$build" -G Ninja >/dev/null
cmake --build "$build"

storage_bin="$build/storage-service/storage-service"
mount_bin="$build/cookiefs/cookiefs"
[[ -x "$storage_bin" ]] || die "$storage_bin was not built; cannot start the stack"

# Idempotence: whatever a previous run left running goes first.
bash "$root/scripts/stop.sh" --quiet
mkdir -p "$state"
# After stop.sh nothing of ours listens: a busy port belongs to someone else.
for port in "$pg_port" "$storage_port" "$storage_metrics_port" "$mount_metrics_port"; do
  if port_open "$port"; then
    die "port $port is already in use by another program; choose other ports with COOKIEFS_PG_PORT, COOKIEFS_STORAGE_PORT, COOKIEFS_STORAGE_METRICS_PORT, COOKIEFS_MOUNT_METRICS_PORT"
  fi
done

# A half-started stack is worse than none: on any failure stop it (logs stay in .state/).
trap 'status=$?; if ((status != 0)); then bash "$root/scripts/stop.sh" --quiet; fi' EXIT

say "starting PostgreSQL (.state/pg, port $pg_port)"
database_url=$(bash "$root/scripts/pg-cluster.sh" start "$state/pg" "$pg_port")

engine_id="quickstart-$(hostname -s | sed 's/[^A-Za-z0-9._-]/-/g')"
say "making tokens (.state/auth/)"
# Fresh tokens on every run: the old ones stop working with the stack they
# were made for. Only hashes go into the credentials file.
auth="$state/auth"
rm -rf "$auth"
mkdir -m 700 "$auth"
credentials="$auth/credentials.yaml"
new_token() { # name role [engine id]
  local extra=()
  [[ -z "${3:-}" ]] || extra=(--engine-id "$3")
  "$storage_bin" token create --namespace default --name "$1" --role "$2" "${extra[@]}" \
    --out "$auth/$1.token" | sed -e '1d' -e 's/^/    /' >>"$credentials"
}
printf 'namespaces:\n  default:\n' >"$credentials"
new_token mount engine "$engine_id"
new_token manager manager
new_token operator operator
chmod 600 "$credentials"

say "starting storage-service (127.0.0.1:$storage_port, auth: tokens)"
# The URL goes through the environment: flags are visible in ps to every user.
COOKIEFS_DATABASE_URL="$database_url" setsid "$storage_bin" \
  --listen "127.0.0.1:$storage_port" --metrics-listen "127.0.0.1:$storage_metrics_port" \
  --auth-mode tokens --auth-credentials-file "$credentials" \
  </dev/null >"$state/storage-service.log" 2>&1 &
storage_pid=$!
echo "$storage_pid" >"$state/storage-service.pid"
ready_storage() { alive "$storage_pid" && port_open "$storage_port"; }
if ! wait_for ready_storage; then
  tail -20 "$state/storage-service.log" >&2
  die "storage-service did not start listening on $storage_port (log: .state/storage-service.log)"
fi

mount_line="not started: $mount_bin is not built yet"
example=""
if [[ -x "$mount_bin" ]]; then
  say "starting cookiefs mount (.state/mnt)"
  mkdir -p "$state/mnt" "$state/cache"
  setsid "$mount_bin" --storage "127.0.0.1:$storage_port" --engine-id "$engine_id" \
    --token-file "$auth/mount.token" --cache-dir "$state/cache" --metrics-listen "127.0.0.1:$mount_metrics_port" -f "$state/mnt" \
    </dev/null >"$state/cookiefs.log" 2>&1 &
  mount_pid=$!
  echo "$mount_pid" >"$state/cookiefs.pid"
  ready_mount() { alive "$mount_pid" && mountpoint -q "$state/mnt"; }
  if ! wait_for ready_mount; then
    tail -20 "$state/cookiefs.log" >&2
    die "cookiefs did not mount .state/mnt (log: .state/cookiefs.log)"
  fi
  mount_line="mounted at $state/mnt (pid $mount_pid, engine id $engine_id, cache .state/cache, metrics 127.0.0.1:$mount_metrics_port)"
  example="mkdir $state/mnt/demo && sqlite3 $state/mnt/demo/cookies.sqlite 'create table c(v); insert into c values(1)'"
fi

cat <<EOF

cookiefs is running:
  PostgreSQL       $database_url   (data and log: .state/pg/)
  storage-service  127.0.0.1:$storage_port (pid $storage_pid, metrics 127.0.0.1:$storage_metrics_port, log: .state/storage-service.log)
  tokens           .state/auth/{mount,manager,operator}.token (hashes in .state/auth/credentials.yaml)
  cookiefs mount   $mount_line
EOF
[[ -z "$example" ]] || printf '\nTry it:\n  %s\n' "$example"
printf '\nThe shim speaks as the manager with:\n  COOKIEFS_TOKEN_FILE=%s %s --storage 127.0.0.1:%s assign SESSION ENGINE_ID\n' \
  "$auth/manager.token" "$build/engine-shim/cookiefs-shim" "$storage_port"
printf '\nLogs are in .state/. Stop everything with: scripts/stop.sh\n'
