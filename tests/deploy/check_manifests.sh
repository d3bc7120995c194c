#!/usr/bin/env bash
# Tests deploy/k8s and deploy/monitoring's Kubernetes objects without a
# cluster: every overlay renders with kustomize (the kubectl on PATH, if any,
# and Debian 12's kubectl 1.20, whose old built-in kustomize is the lowest we
# support), both render the same objects, the objects pass schema
# validation (npm kubernetes-models, @kubernetes-models/prometheus-operator)
# and have no unknown fields (python3-kubernetes), and the YAML lints.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
root=$(repo_root)
cache=${COOKIEFS_CI_CACHE:-/var/cache/cookiefs-ci}
mkdir -p "$cache"

apt_need python3-kubernetes python3-yaml yamllint ca-certificates
command -v node >/dev/null && command -v npm >/dev/null || apt_need nodejs npm

# Debian 12's kubectl, unpacked (not installed, so it cannot clash with another kubectl).
debian_kubectl=$cache/kubernetes-client/usr/bin/kubectl
if [[ ! -x $debian_kubectl ]]; then
  note "fetching Debian's kubernetes-client"
  dl=$(mktemp -d); (cd "$dl" && apt-get download -qq kubernetes-client 2>/dev/null) \
    || { apt-get update -qq && (cd "$dl" && apt-get download -qq kubernetes-client 2>/dev/null); }
  dpkg -x "$dl"/kubernetes-client_*.deb "$cache/kubernetes-client"; rm -rf "$dl"
fi
renderers=("$debian_kubectl")
if command -v kubectl >/dev/null && [[ $(command -v kubectl) != "$debian_kubectl" ]]; then
  renderers+=("$(command -v kubectl)")
fi

npm_dir=$cache/npm
if [[ ! -f $npm_dir/node_modules/.cookiefs-models-5.1.0 ]]; then
  note "npm install kubernetes-models into $npm_dir"
  mkdir -p "$npm_dir"
  (cd "$npm_dir" && [[ -f package.json ]] || echo '{"name":"cookiefs-ci","private":true}' >"$npm_dir/package.json"
   cd "$npm_dir" && npm install --no-audit --no-fund --loglevel=error \
     kubernetes-models@5.1.0 @kubernetes-models/prometheus-operator@6.0.0 js-yaml@4.1.0 >/dev/null)
  touch "$npm_dir/node_modules/.cookiefs-models-5.1.0"
fi

out=$(mktemp -d /tmp/cookiefs-manifests.XXXXXX)
trap 'rm -rf "$out"' EXIT
targets=(k8s/overlays/evaluation k8s/overlays/production k8s/overlays/native-sidecar monitoring)
for t in "${targets[@]}"; do
  name=${t//\//_}
  for i in "${!renderers[@]}"; do
    k=${renderers[$i]}
    v=$("$k" version --client 2>/dev/null | grep -o 'v[0-9][0-9.]*' | head -1 || true)
    note "kustomize $t with $k ($v)"
    "$k" kustomize "$root/deploy/$t" >"$out/$name.r$i.yaml" 2>"$out/err" || { cat "$out/err" >&2; fail "$t does not render with kubectl $v"; }
  done
  # Every renderer yields the same set of objects.
  sets=$(for f in "$out/$name".r*.yaml; do
    /usr/bin/python3 -c 'import sys,yaml; print(sorted((d["kind"],d["metadata"]["name"]) for d in yaml.safe_load_all(open(sys.argv[1])) if d))' "$f"
  done | sort -u | wc -l)
  [[ $sets -eq 1 ]] || fail "$t: kubectl versions render different objects"
  cp "$out/$name.r0.yaml" "$out/$name.yaml"
done

rendered=("$out"/k8s_overlays_evaluation.yaml "$out"/k8s_overlays_production.yaml
          "$out"/k8s_overlays_native-sidecar.yaml "$out"/monitoring.yaml)

note "the native-sidecar overlay makes cookiefs a restartable init container"
/usr/bin/python3 - "$out/k8s_overlays_native-sidecar.yaml" <<'PY' || fail "native-sidecar overlay is wrong"
import sys, yaml
eng = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "Deployment" and d["metadata"]["name"] == "engine"][0]
spec = eng["spec"]["template"]["spec"]
init = [c for c in spec.get("initContainers", []) if c["name"] == "cookiefs"]
assert init and init[0]["restartPolicy"] == "Always" and "startupProbe" in init[0], "cookiefs is not a native sidecar"
assert all(c["name"] != "cookiefs" for c in spec["containers"]), "cookiefs still in containers"
PY

note "schema validation (kubernetes-models)"
COOKIEFS_NPM_DIR=$npm_dir node "$root/tests/deploy/validate_manifests.mjs" "${rendered[@]}"
note "unknown fields (python3-kubernetes)"
/usr/bin/python3 "$root/tests/deploy/unknown_fields.py" "${rendered[@]}"
note "yamllint"
yamllint -d '{extends: relaxed, rules: {line-length: {max: 160}}}' -s "$root/deploy"
note "manifests OK"
