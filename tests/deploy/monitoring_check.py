#!/usr/bin/python3
"""Checks of deploy/monitoring that promtool does not do.

  monitoring_check.py static DIR            PrometheusRule == alerts.rules.yml; dashboard sane
  monitoring_check.py regenerate DIR        rewrite DIR/k8s/prometheusrule.yaml
  monitoring_check.py scrape DIR A.prom...  every cookiefs_* metric queried by the
                                            dashboard and the rules is in the scrapes
Exits 1 with one line per problem.
"""
import json
import os
import re
import sys

import yaml

HEADER = ("# Generated from deploy/monitoring/alerts.rules.yml (same groups; tests/deploy/check_monitoring.sh\n"
          "# fails when they differ). Edit the rules file, then regenerate with\n"
          "# tests/deploy/check_monitoring.sh --regenerate.\n")


def rules(d):
    with open(os.path.join(d, "alerts.rules.yml")) as f:
        return yaml.safe_load(f)


def prometheus_rule(d):
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": "cookiefs",
                         "labels": {"app.kubernetes.io/part-of": "cookiefs", "role": "alert-rules"}},
            "spec": rules(d)}


def regenerate(d):
    def literal(dumper, data):
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)
    yaml.add_representer(str, literal)
    with open(os.path.join(d, "k8s", "prometheusrule.yaml"), "w") as f:
        f.write(HEADER + yaml.dump(prometheus_rule(d), sort_keys=False, width=200))


def dashboard(d):
    with open(os.path.join(d, "grafana-dashboard-cookiefs-fleet.json")) as f:
        return json.load(f)


def dashboard_exprs(dash):
    for p in dash["panels"]:
        for t in p.get("targets", []):
            yield p["title"], t["expr"]


def rule_exprs(d):
    for g in rules(d)["groups"]:
        for r in g["rules"]:
            yield r.get("alert") or r.get("record"), r["expr"]


def static(d):
    problems = []
    with open(os.path.join(d, "k8s", "prometheusrule.yaml")) as f:
        if yaml.safe_load(f) != prometheus_rule(d):
            problems.append("k8s/prometheusrule.yaml differs from alerts.rules.yml (run check_monitoring.sh --regenerate)")
    dash = dashboard(d)
    ids, seen_titles = set(), set()
    for p in dash["panels"]:
        if p["id"] in ids:
            problems.append(f"dashboard: panel id {p['id']} used twice")
        ids.add(p["id"])
        if p["type"] != "row":
            if not p.get("targets"):
                problems.append(f"dashboard: panel '{p['title']}' has no query")
            if p["title"] in seen_titles:
                problems.append(f"dashboard: panel title '{p['title']}' used twice")
            seen_titles.add(p["title"])
            gp = p["gridPos"]
            if gp["x"] + gp["w"] > 24:
                problems.append(f"dashboard: panel '{p['title']}' is wider than the grid")
    for title, expr in dashboard_exprs(dash):
        if expr.count("(") != expr.count(")") or expr.count("{") != expr.count("}"):
            problems.append(f"dashboard: unbalanced query in '{title}': {expr}")
    # Every area the issue asks for has a panel.
    wanted = {"commit rate": r"commit", "latency": r"latency", "hand-offs": r"hand-off",
              "errors": r"error", "fencing": r"fenced", "dirty backlog": r"dirty",
              "replicas": r"replica", "database pool": r"database pool"}
    titles = " | ".join(t.lower() for t in seen_titles)
    for what, pattern in wanted.items():
        if not re.search(pattern, titles):
            problems.append(f"dashboard: no panel about {what}")
    return problems


METRIC = re.compile(r"\b(cookiefs_[a-z0-9_]+)")


def scrape(d, files):
    exported = set()
    for path in files:
        with open(path) as f:
            for line in f:
                if line.startswith("#"):
                    continue
                m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)", line)
                if m:
                    exported.add(m.group(1))
    problems = []
    queried = [("dashboard panel", t, e) for t, e in dashboard_exprs(dashboard(d))]
    queried += [("alert", t, e) for t, e in rule_exprs(d)]
    used = set()
    for kind, title, expr in queried:
        for name in METRIC.findall(expr):
            used.add(name)
            if name not in exported:
                problems.append(f"{kind} '{title}' queries {name}, which no daemon exports")
    print(f"{len(used)} metrics queried, all exported" if not problems else "", end="")
    print()
    print("exported but not on the dashboard or in a rule:",
          ", ".join(sorted({re.sub(r"_(bucket|sum|count)$", "", n) for n in exported if n.startswith("cookiefs_")}
                           - {re.sub(r"_(bucket|sum|count)$", "", n) for n in used})) or "none")
    return problems


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, d = sys.argv[1], sys.argv[2]
    if cmd == "regenerate":
        regenerate(d)
        return 0
    problems = static(d) if cmd == "static" else scrape(d, sys.argv[3:]) if cmd == "scrape" else None
    if problems is None:
        print(__doc__, file=sys.stderr)
        return 2
    for p in problems:
        print("FAIL:", p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
