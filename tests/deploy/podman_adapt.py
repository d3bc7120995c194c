#!/usr/bin/python3
"""Rewrites a rendered deploy/k8s overlay so `podman kube play` (4.3) can run
it on one host, changing only what podman cannot play and keeping the rest of
the manifests as they are (deploy/k8s stays Kubernetes-correct):

- Secrets are not played: secretKeyRef env vars get the Secret's value.
- Services do not exist: every pod shares the host network (hostNetwork), so
  Service names become 127.0.0.1 and every port becomes a free one chosen by
  the caller (PostgreSQL via PGPORT, the storage service and the mount via
  their config files); a second storage replica would collide, so 1 replica.
- podman 4.3 ignores mountPropagation on emptyDir volumes, so the engine
  pod's "jars" emptyDir becomes a hostPath to JARS_DIR, which the caller
  makes a shared mount (Bidirectional then propagates the FUSE mount).
- Objects podman does not play (Service, PDB, HPA, Namespace, Secret) are
  dropped.

  podman_adapt.py IN.yaml OUT.yaml PG_PORT STORAGE_PORT STORAGE_METRICS_PORT MOUNT_METRICS_PORT JARS_DIR
"""
import sys

import yaml

src, dst, pg_port, st_port, st_metrics, mnt_metrics, jars_dir = sys.argv[1:8]
docs = [d for d in yaml.safe_load_all(open(src)) if d]
secrets = {d["metadata"]["name"]: d.get("stringData", {}) for d in docs if d["kind"] == "Secret"}
out = []
for d in docs:
    kind, name = d["kind"], d["metadata"]["name"]
    if kind in ("Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "Namespace", "Secret"):
        continue
    if kind == "ConfigMap" and name == "cookiefs-storage":
        cfg = yaml.safe_load(d["data"]["storage-service.yaml"])
        cfg["listen"] = f"127.0.0.1:{st_port}"
        cfg["metrics_listen"] = f"127.0.0.1:{st_metrics}"
        d["data"]["storage-service.yaml"] = yaml.safe_dump(cfg)
    if kind == "ConfigMap" and name == "cookiefs-mount":
        cfg = yaml.safe_load(d["data"]["cookiefs.yaml"])
        cfg["storage"] = [f"127.0.0.1:{st_port}"]
        cfg["metrics_listen"] = f"127.0.0.1:{mnt_metrics}"
        d["data"]["cookiefs.yaml"] = yaml.safe_dump(cfg)
    if kind == "Deployment":
        d["spec"]["replicas"] = 1
        pod = d["spec"]["template"]["spec"]
        pod["hostNetwork"] = True
        for v in pod.get("volumes", []):
            if v["name"] == "jars" and "emptyDir" in v:
                del v["emptyDir"]
                v["hostPath"] = {"path": jars_dir, "type": "Directory"}
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            c.pop("ports", None)  # with hostNetwork, podman would publish them again
            # podman 4.3 turns probes into systemd-timer health checks that cannot
            # run here (no systemd) and, without the named ports popped above,
            # cannot resolve their port either; a failing one restarts the
            # container while its predecessor still holds the host port.
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                c.pop(probe, None)
            env = []
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    e = {"name": e["name"], "value": secrets[ref["name"]][ref["key"]]}
                if isinstance(e.get("value"), str):
                    e["value"] = (e["value"].replace("@cookiefs-postgres:5432", f"@127.0.0.1:{pg_port}"))
                env.append(e)
            if name == "cookiefs-postgres":
                env.append({"name": "PGPORT", "value": str(pg_port)})
            if env:
                c["env"] = env
    out.append(d)
yaml.safe_dump_all(out, open(dst, "w"), sort_keys=False)
