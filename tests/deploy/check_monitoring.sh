#!/usr/bin/env bash
# Tests deploy/monitoring: promtool check + unit tests of the alert rules, the
# PrometheusRule equals the rules file, the Grafana dashboard parses, and every
# metric the dashboard and the rules query exists in a real scrape of a
# running storage-service and cookiefs mount.
#   check_monitoring.sh               all of the above (root, built daemons)
#   check_monitoring.sh --static      without the scrape
#   check_monitoring.sh --regenerate  rewrite k8s/prometheusrule.yaml from the rules file
set -euo pipefail
source "$(dirname "$0")/lib.sh"
root=$(repo_root)
mon=$root/deploy/monitoring
mode=${1:-all}

apt_need prometheus python3-yaml

if [[ $mode == --regenerate ]]; then
  python3 "$root/tests/deploy/monitoring_check.py" regenerate "$mon"
  exit 0
fi

note "promtool check rules"
promtool check rules "$mon/alerts.rules.yml"
note "promtool test rules"
(cd "$mon" && promtool test rules alerts.test.yml)
note "PrometheusRule, dashboard"
/usr/bin/python3 "$root/tests/deploy/monitoring_check.py" static "$mon"
[[ $mode == --static ]] && exit 0


tmp=$(mktemp -d /tmp/cookiefs-monitoring.XXXXXX)
start_stack "$tmp"
jar_workload monitoring-check 3
curl -sf "http://$STORAGE_METRICS/metrics" >"$tmp/storage.prom"
curl -sf "http://$MOUNT_METRICS/metrics" >"$tmp/mount.prom"
note "promtool check metrics (lint of both exposition formats)"
promtool check metrics <"$tmp/storage.prom" || true   # lint hints only (e.g. no unit suffix)
note "every queried metric is exported"
/usr/bin/python3 "$root/tests/deploy/monitoring_check.py" scrape "$mon" "$tmp/storage.prom" "$tmp/mount.prom"
