#!/usr/bin/env bash
# Smoke run of deploy/k8s/overlays/evaluation under `podman kube play` (4.3)
# with images built locally from a debootstrap Debian 12 base and the built
# binaries: PostgreSQL, storage-service, and the engine pod whose cookiefs
# sidecar mounts the jar volume. The demo engine (cog, headless WPE WebKit)
# writes its cookie jar through the mount; the jar must land in PostgreSQL;
# SIGTERM to the engine pod must unmount cleanly (sidecar exit code 0, no
# FUSE mount left behind). Heavy: debootstrap (~40 s, cached in
# /var/cache/cookiefs-ci) and image builds. Root only.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
root=$(repo_root)
cache=${COOKIEFS_CI_CACHE:-/var/cache/cookiefs-ci}
[[ $(id -u) -eq 0 ]] || fail "smoke_podman.sh needs root"
apt_need podman runc catatonit debootstrap fuse3 python3-yaml curl
build=$(find_build_dir) || fail "no build dir with the daemons (set COOKIEFS_BUILD_DIR)"

tmp=$(mktemp -d /tmp/cookiefs-smoke.XXXXXX)
# A podman store of this test's own, kept in the cache so image layers are
# reused between runs. Podman pins its run and volume directories in the
# store's database, so they are fixed paths too (one run at a time).
store=$cache/podman/root
vols=$cache/podman/volumes
run=/run/cookiefs-ci-podman
export CONTAINERS_CONF=$tmp/containers.conf
cat >"$CONTAINERS_CONF" <<CONF
[containers]
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"
volume_path = "$vols"
CONF
mkdir -p "$vols" "$store" "$run"
export PODMAN="podman --root $store --runroot $run"
pm() { $PODMAN "$@"; }

cleanup() {
  set +e
  for pod in engine-pod-0 cookiefs-storage-pod-0 cookiefs-postgres-pod-0; do
    pm pod stop -t 30 "$pod" >/dev/null 2>&1
    pm pod rm -f "$pod" >/dev/null 2>&1
  done
  pm volume prune -f >/dev/null 2>&1
  grep -F " $tmp/" /proc/self/mountinfo | awk '{print $5}' | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null
  done
  [[ -z ${KEEP_TEST_DIR:-} ]] && rm -rf "$tmp"
}
trap cleanup EXIT

# The engine pod's jar volume (a hostPath here, see podman_adapt.py) must be a
# shared mount so that the sidecar's FUSE mount (Bidirectional) propagates to
# the host and on to the engine container (HostToContainer).
jars=$tmp/jars
mkdir -p "$jars"
mount --bind "$jars" "$jars"
mount --make-rshared "$jars"

note "images (binaries from $build)"
mkdir -p "$tmp/bin"
cp "$build/storage-service/storage-service" "$build/cookiefs/cookiefs" "$build/engine-shim/cookiefs-shim" "$tmp/bin/"
t0=$SECONDS
"$root/deploy/containers/build-images.sh" "$tmp/bin"
echo "images built in $((SECONDS - t0)) s"

note "render and adapt deploy/k8s/overlays/evaluation"
kubectl_bin=$cache/kubernetes-client/usr/bin/kubectl
[[ -x $kubectl_bin ]] || kubectl_bin=$(command -v kubectl) || fail "no kubectl: run check_manifests.sh first"
"$kubectl_bin" kustomize "$root/deploy/k8s/overlays/evaluation" >"$tmp/rendered.yaml"
pg_port=$(free_port); st_port=$(free_port); st_metrics=$(free_port); mnt_metrics=$(free_port)
/usr/bin/python3 "$root/tests/deploy/podman_adapt.py" "$tmp/rendered.yaml" "$tmp/play.yaml" \
  "$pg_port" "$st_port" "$st_metrics" "$mnt_metrics" "$jars"

note "podman kube play"
pm kube play "$tmp/play.yaml" >"$tmp/play.log" 2>&1 || { cat "$tmp/play.log"; fail "kube play failed"; }
logs() {
  for c in cookiefs-postgres-pod-0-postgres cookiefs-storage-pod-0-storage-service engine-pod-0-cookiefs engine-pod-0-engine; do
    echo "== $c"; pm logs --tail 15 "$c" 2>&1
  done
}
psql_eval() {
  pm exec cookiefs-postgres-pod-0-postgres psql -h /run/postgresql -p "$pg_port" -U cookiefs -d cookiefs -tAc "$1"
}
wait_for "PostgreSQL" 120 psql_eval "SELECT 1" || { logs; fail "PostgreSQL did not come up"; }
wait_for "storage-service metrics" 120 curl -sf "http://127.0.0.1:$st_metrics/metrics" || { logs; fail "storage-service did not come up"; }
wait_for "the sidecar's mount" 120 pm exec engine-pod-0-cookiefs cookiefs-sidecar ready || { logs; fail "sidecar did not mount"; }
echo "mount visible in the engine container:"
pm exec engine-pod-0-engine ls -la /var/lib/cookiefs/jars/mnt/ || true
pm exec engine-pod-0-engine test -d /var/lib/cookiefs/jars/mnt/.cookiefs || { logs; fail "engine does not see the mount"; }

note "the engine's jar lands in PostgreSQL"
landed() {
  [[ $(psql_eval "SELECT count(*) FROM files WHERE session_id = 'demo-session' AND path LIKE '%cookies.sqlite' AND valid_to IS NULL") -ge 1 ]]
}
wait_for "cookies.sqlite of demo-session in PostgreSQL" 180 landed || { logs; fail "the jar never reached PostgreSQL"; }
psql_eval "SELECT session_id, owner, epoch, version, total_bytes FROM sessions WHERE session_id = 'demo-session'"
psql_eval "SELECT path, valid_from FROM files WHERE session_id = 'demo-session' AND valid_to IS NULL ORDER BY path"
curl -sf "http://127.0.0.1:$mnt_metrics/metrics" | grep -E '^cookiefs_(commits_total|storage_connected|dirty_bytes)' || true

note "SIGTERM to the engine pod unmounts cleanly"
volumes_fuse() { grep -F "$jars/" /proc/self/mountinfo | grep -c fuse || true; }
echo "FUSE mounts under the jar volume before stop: $(volumes_fuse)"
[[ $(volumes_fuse) -ge 1 ]] || fail "the sidecar's mount did not propagate to the host"
pm pod stop -t 60 engine-pod-0 >/dev/null
code=$(pm inspect --format '{{.State.ExitCode}}' engine-pod-0-cookiefs)
pm logs --tail 5 engine-pod-0-cookiefs 2>&1 | sed 's/^/  sidecar: /'
[[ $code -eq 0 ]] || fail "cookiefs sidecar exited with $code on SIGTERM"
[[ $(volumes_fuse) -eq 0 ]] || fail "a FUSE mount is left behind after SIGTERM"
echo "sidecar exit code $code, FUSE mounts left: $(volumes_fuse)"
note "smoke run OK"
