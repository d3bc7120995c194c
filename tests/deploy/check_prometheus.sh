#!/usr/bin/env bash
# A real Prometheus (Debian's) scrapes a running storage-service and cookiefs
# mount with deploy/monitoring's job names and rules; after a jar workload
# (SQLite transactions into <mount>/<session>/cookies.sqlite, then fsync) its
# HTTP API must show the commit and FUSE metrics moving, and the rules loaded.
# Needs root (FUSE) and the built daemons (COOKIEFS_BUILD_DIR).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
root=$(repo_root)
apt_need prometheus curl python3-yaml

tmp=$(mktemp -d /tmp/cookiefs-prometheus.XXXXXX)
PROM_PID=
stop_all() {
  [[ -n $PROM_PID ]] && kill -TERM "$PROM_PID" 2>/dev/null && wait "$PROM_PID" 2>/dev/null
  PROM_PID=
  stop_stack
}
start_stack "$tmp/stack"
trap stop_all EXIT

prom=127.0.0.1:$(free_port)
mkdir -p "$tmp/prom"
cp "$root/deploy/monitoring/alerts.rules.yml" "$tmp/prom/"
# deploy/monitoring/prometheus.yml with fast intervals and our local targets.
/usr/bin/python3 - "$root/deploy/monitoring/prometheus.yml" "$tmp/prom/prometheus.yml" "$STORAGE_METRICS" "$MOUNT_METRICS" <<'PY'
import sys, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
cfg["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
targets = {"cookiefs-storage": sys.argv[3], "cookiefs-mount": sys.argv[4]}
for job in cfg["scrape_configs"]:
    job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
yaml.safe_dump(cfg, open(sys.argv[2], "w"))
PY
promtool check config "$tmp/prom/prometheus.yml" >/dev/null
prometheus --config.file="$tmp/prom/prometheus.yml" --storage.tsdb.path="$tmp/prom/data" \
  --web.listen-address="$prom" >"$tmp/prom/prometheus.log" 2>&1 &
PROM_PID=$!

# query EXPR: prints the first sample's value, or nothing.
query() {
  curl -sf --get "http://$prom/api/v1/query" --data-urlencode "query=$1" | /usr/bin/python3 -c '
import json, sys
r = json.load(sys.stdin)["data"]["result"]
print(r[0]["value"][1] if r else "")'
}
gt() { local v; v=$(query "$1"); [[ -n $v ]] && /usr/bin/python3 -c "import sys; sys.exit(0 if float('$v') > float('$2') else 1)"; }

note "waiting for Prometheus to scrape both daemons"
wait_for "both targets up" 90 gt 'sum(up{job=~"cookiefs-storage|cookiefs-mount"})' 1.5 \
  || { tail -20 "$tmp/prom/prometheus.log"; fail "targets not up"; }
rules=$(curl -sf "http://$prom/api/v1/rules" | /usr/bin/python3 -c '
import json, sys; print(sum(len(g["rules"]) for g in json.load(sys.stdin)["data"]["groups"]))')
want=$(grep -c -- '- alert:' "$root/deploy/monitoring/alerts.rules.yml")
[[ $rules -eq $want ]] || fail "Prometheus loaded $rules rules, the file has $want"

metrics=(
  'sum(cookiefs_commits_total{job="cookiefs-mount",result="ok"})'
  'sum(cookiefs_commit_duration_seconds_count{job="cookiefs-mount"})'
  'sum(cookiefs_fuse_requests_total{job="cookiefs-mount"})'
  'sum(cookiefs_storage_requests_total{job="cookiefs-storage",op="commit",result="ok"})'
  'sum(cookiefs_storage_commit_duration_seconds_count{job="cookiefs-storage"})'
)
declare -A before
# Labelled counters (result="ok") appear with their first increment: no
# series yet counts as 0.
for m in "${metrics[@]}"; do
  v=$(query "$m"); before[$m]=${v:-0}
done
note "jar workload: 20 SQLite transactions + fsync"
jar_workload prometheus-check 20
for m in "${metrics[@]}"; do
  wait_for "$m to grow" 60 gt "$m" "${before[$m]}" || fail "$m did not move (still ${before[$m]})"
  echo "$m: ${before[$m]} -> $(query "$m")"
done
echo "dirty bytes now: $(query 'sum(cookiefs_dirty_bytes)'), storage connected: $(query 'max(cookiefs_storage_connected)')"
note "Prometheus saw the workload"
