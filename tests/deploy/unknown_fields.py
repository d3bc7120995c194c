#!/usr/bin/python3
"""Finds unknown fields (typos such as `replica:` or `comand:`) in rendered
Kubernetes manifests, which schema validation lets through, by walking each
object against the model attribute tables of Debian's python3-kubernetes.

  unknown_fields.py FILE.yaml...

That client models Kubernetes 1.22, so fields added since are allow-listed
below, and kinds it does not know (CRDs) are reported as skipped.
Exits 1 with one line per unknown field.
"""
import re
import sys

import kubernetes.client as k8s
import yaml

# apiVersion/kind -> model class name in the 1.22 client.
KINDS = {
    ("v1", "Namespace"): "V1Namespace",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Secret"): "V1Secret",
    ("v1", "Service"): "V1Service",
    ("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim",
    ("v1", "Pod"): "V1Pod",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("apps/v1", "StatefulSet"): "V1StatefulSet",
    ("apps/v1", "DaemonSet"): "V1DaemonSet",
    ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget",
    # autoscaling/v2 (1.23) has the fields of v2beta2.
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "V2beta2HorizontalPodAutoscaler",
}

# Fields newer than Kubernetes 1.22, by model.
NEWER = {
    "V1Container": {"restartPolicy", "resizePolicy"},  # native sidecars (1.28+), 1.27
    "V1PodSpec": {"hostUsers", "schedulingGates", "resourceClaims"},
    "V1TopologySpreadConstraint": {"minDomains", "nodeAffinityPolicy", "nodeTaintsPolicy", "matchLabelKeys"},
}


def walk(value, type_name, where, problems):
    if value is None:
        return
    m = re.fullmatch(r"list\[(.+)\]", type_name)
    if m:
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list")
            return
        for i, item in enumerate(value):
            walk(item, m.group(1), f"{where}[{i}]", problems)
        return
    m = re.fullmatch(r"dict\((.+), (.+)\)", type_name)
    if m:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, m.group(2), f"{where}.{k}", problems)
        return
    model = getattr(k8s, type_name, None)
    if model is None or not hasattr(model, "openapi_types"):
        return  # a scalar, object or IntOrString
    if not isinstance(value, dict):
        problems.append(f"{where}: expected an object ({type_name})")
        return
    by_json = {json: attr for attr, json in model.attribute_map.items()}
    for key, sub in value.items():
        if key in by_json:
            walk(sub, model.openapi_types[by_json[key]], f"{where}.{key}", problems)
        elif key not in NEWER.get(type_name, ()):
            problems.append(f"{where}: unknown field '{key}' in {type_name}")


def main():
    problems, checked, skipped = [], 0, set()
    for path in sys.argv[1:]:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if not doc:
                    continue
                model = KINDS.get((doc.get("apiVersion"), doc.get("kind")))
                if not model:
                    skipped.add(f"{doc.get('apiVersion')} {doc.get('kind')}")
                    continue
                walk(doc, model, f"{doc['kind']}/{doc['metadata']['name']}", problems)
                checked += 1
    for p in problems:
        print("FAIL:", p, file=sys.stderr)
    print(f"{checked} objects without unknown fields" +
          (f"; not checked (no model): {', '.join(sorted(skipped))}" if skipped else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
