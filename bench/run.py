#!/usr/bin/env python3
"""cookiefs benchmark harness: one command that sets everything up, runs every
workload on every target interleaved in rounds, prints a markdown table (median
ops/s, p50, p99, ratio to tmpfs in the same round, FUSE requests per op), the
service-level results and the goals, writes a PNG chart, and tears everything
down again, also on failure or Ctrl-C.

  sudo bench/run.py [--build-dir build] [--quick] [--strict]

Needs root (mounts a tmpfs, runs FUSE mounts and a private sshd). See
docs/performance.md for the method. Single-threaded orchestration; the
workloads run as child processes (bench/workload.py).
"""

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import service  # noqa: E402
import targets as tg  # noqa: E402
from targets import SOURCE_DIR, Teardown, log  # noqa: E402

WORKLOADS = ["soup-db", "soup-db-sync", "chromium", "soup-text", "read-hot", "read-cold",
             "concurrent-64", "concurrent-64-procs"]
TARGETS = ["tmpfs", "ext4", "passthrough_ll", "sshfs", "cookiefs", "cookiefs-wb",
           "cookiefs-wb-uring", "passthrough_ll-cpu0", "cookiefs-wb-cpu0", "passthrough_ll-poll",
           "cookiefs-wb-poll"]
# Not in --quick's default targets (CI's regression guard, < 2 min): the
# -poll ones change a machine setting (HaltPoll), and all of them run the
# code of passthrough_ll and cookiefs-wb, only placed or tuned otherwise.
QUICK_SKIPS = ("passthrough_ll-cpu0", "cookiefs-wb-cpu0", "passthrough_ll-poll",
               "cookiefs-wb-poll")
PASSTHROUGH_CLASSES = {"passthrough_ll": tg.Passthrough, "passthrough_ll-cpu0": tg.PassthroughOneCpu,
                       "passthrough_ll-poll": tg.PassthroughPoll}
COOKIEFS_CLASSES = {"cookiefs": tg.Cookiefs, "cookiefs-wb": tg.CookiefsWriteback,
                    "cookiefs-wb-uring": tg.CookiefsUring, "cookiefs-wb-cpu0": tg.CookiefsOneCpu,
                    "cookiefs-wb-poll": tg.CookiefsPoll}
COOKIEFS_TARGETS = tuple(COOKIEFS_CLASSES)
WORKLOAD_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "workload.py")


class Interrupted(BaseException):
    """Not an Exception: the per-workload `except Exception` must not swallow Ctrl-C."""


def on_signal(signum, _frame):
    raise Interrupted(f"signal {signum}")


def make_targets(names, root, tmpfs_root, disk_root, stack, cookiefs_cache):
    made = {}
    for name in names:
        if name == "tmpfs":
            made[name] = tg.Tmpfs(root, tmpfs_root)
        elif name == "ext4":
            made[name] = tg.Ext4(root, disk_root)
        elif name in PASSTHROUGH_CLASSES:
            made[name] = PASSTHROUGH_CLASSES[name](root, tmpfs_root)
        elif name == "sshfs":
            made[name] = tg.Sshfs(root, tmpfs_root)
        elif name in COOKIEFS_CLASSES:
            cache = tmpfs_root if cookiefs_cache == "tmpfs" else disk_root
            made[name] = COOKIEFS_CLASSES[name](root, stack, cache)
        else:
            raise SystemExit(f"bench: unknown target {name!r} (known: {', '.join(TARGETS)})")
    return made


def run_workload(target, workload, round_no, p):
    cmd = [*tg.pinned(target.cpus), sys.executable, WORKLOAD_SCRIPT, "--workload", workload,
           "--dir", target.dir, "--reader-dir", target.reader_dir, "--session-prefix",
           f"{target.session_tag}r{round_no}-{workload}",
           "--budget", str(p["budget"]), "--min-ops", str(p["min_ops"]), "--max-ops",
           str(p["max_ops"]), "--cold-sessions", str(p["cold_sessions"])]
    if target.drop_cache:
        cmd.append("--drop-cache")
    for url in target.metrics:
        cmd += ["--metrics", url]
    with target.halt_poll.applied() if target.halt_poll else contextlib.nullcontext():
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=p["timeout"])
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else
                           f"exit {out.returncode}")
    return json.loads(out.stdout)


def fmt_time(us):
    if us is None:
        return "–"
    if us >= 1000:
        return f"{us / 1000:.2f} ms"
    return f"{us:.0f} µs"


def fmt_rate(x):
    if x is None:
        return "–"
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio_rounds(results, workload, target, base):
    """Per-round ratio target/base, pairing results from the same round."""
    mine, theirs = results[workload].get(target, {}), results[workload].get(base, {})
    return [mine[r]["ops_per_s"] / theirs[r]["ops_per_s"] for r in mine
            if r in theirs and mine[r].get("ops_per_s") and theirs[r].get("ops_per_s")]


def fuse_per_op(rounds):
    vals = []
    for res in rounds.values():
        if res.get("fuse_requests") is not None and res["ops"]:
            vals.append(sum(res["fuse_requests"].values()) / res["ops"])
    return med(vals)


def table(results, target_names, errors):
    lines = ["| workload | target | ops/s | p50 | p99 | × tmpfs | FUSE req/op |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for w in results:
        for t in target_names:
            rounds = results[w].get(t, {})
            if not rounds:
                err = errors.get((w, t), "not run")
                lines.append(f"| {w} | {t} | failed: {err[:80]} | | | | |")
                continue
            ratio = med(ratio_rounds(results, w, t, "tmpfs"))
            fpo = fuse_per_op(rounds)
            lines.append(
                f"| {w} | {t} | {fmt_rate(med([r['ops_per_s'] for r in rounds.values()]))} | "
                f"{fmt_time(med([r['p50_us'] for r in rounds.values()]))} | "
                f"{fmt_time(med([r['p99_us'] for r in rounds.values()]))} | "
                f"{'–' if ratio is None else f'{ratio:.3f}'} | "
                f"{'–' if fpo is None else f'{fpo:.1f}'} |")
    return "\n".join(lines)


def service_table(svc):
    lines = ["| service benchmark | result |", "|---|---|"]
    c = svc.get("commits")
    if c:
        s = [x["commits_per_s"] for x in c["service"]]
        pg = [x["tps"] for x in c["pgbench"]]
        lines.append("| durable 16 KiB commits/s, storage service, 64 writers | " +
                     (f"{med(s):,.0f} (p50 {fmt_time(med([x['p50_us'] for x in c['service']]))}, "
                      f"p99 {fmt_time(med([x['p99_us'] for x in c['service']]))})" if s else
                      f"TODO: failed: {c.get('service_error', '?')[:120]}") + " |")
        lines.append("| pgbench 16 KiB single-row upsert TPS, 64 clients | " +
                     (f"{med(pg):,.0f}" if pg else
                      f"failed: {c.get('pgbench_error', '?')[:120]}") + " |")
        if s and pg:
            lines.append(f"| ratio service / pgbench (median of rounds) | "
                         f"{med([a / b for a, b in zip(s, pg)]):.2f} |")
    h = svc.get("handoff")
    if h is not None:
        lines.append("| hand-off assign → ready, 64 KiB session | " +
                     (f"p50 {fmt_time(h['p50_us'])}, p99 {fmt_time(h['p99_us'])} "
                      f"({h['assigns']} assigns, ready {h['ready']}, drained {h['drained']})"
                      if "error" not in h else f"TODO: {h['error'][:160]}") + " |")
    i = svc.get("instructions")
    if i is not None:
        lines.append("| storage-service instructions per commit (callgrind) | " +
                     (f"{i['instructions_per_commit']:,.0f}" if "error" not in i else
                      f"TODO: {i['error'][:160]}") + " |")
    m = svc.get("rss")
    if m is not None:
        lines.append("| cookiefs RSS holding sessions | " +
                     (f"{m['rss_kib'] / 1024:.1f} MiB with {m['sessions']:,} sessions "
                      f"(held {m.get('held') or 0:,.0f}; idle {m['rss_idle_kib'] / 1024:.1f} MiB;"
                      f" kernel caches dropped {m.get('kernel_cache_drops', 0)}×)"
                      if "error" not in m else
                      f"TODO: {m['error'][:160]}") + " |")
    return "\n".join(lines)


def goals(results, svc):
    """(goal, measured text, met?) for every goal of the performance issue."""
    out = []

    def ratio_goal(label, workload, base, want):
        for target in COOKIEFS_TARGETS:
            r = (med(ratio_rounds(results, workload, target, base))
                 if target in results.get(workload, {}) else None)
            if r is None and target != "cookiefs":
                continue
            out.append((f"{label} ≥ {want}× {base} ({target})",
                        "not measured" if r is None else f"{r:.3f}×",
                        None if r is None else r >= want))

    ratio_goal("libsoup SQLite", "soup-db", "tmpfs", 0.25)
    ratio_goal("hot read", "read-hot", "tmpfs", 0.5)
    ratio_goal("text jar", "soup-text", "tmpfs", 0.4)
    ratio_goal("synchronous=FULL", "soup-db-sync", "ext4", 0.5)
    c = svc.get("commits") or {}
    s, pg = [x["commits_per_s"] for x in c.get("service", [])], [x["tps"] for x in
                                                                 c.get("pgbench", [])]
    r = med([a / b for a, b in zip(s, pg)]) if s and pg else None
    out.append(("durable commits ≥ 2× pgbench", "not measured" if r is None else f"{r:.2f}×",
                None if r is None else r >= 2))
    h = svc.get("handoff") or {}
    v = h.get("p99_us")
    out.append(("hand-off p99 ≤ 20 ms", "not measured" if v is None else fmt_time(v),
                None if v is None else v <= 20000))
    for target in COOKIEFS_TARGETS:
        cold = results.get("read-cold", {}).get(target, {})
        v = med([x["p50_us"] for x in cold.values()])
        if v is None and target != "cookiefs":
            continue
        out.append((f"cold 64 KiB read p50 ≤ 2 ms ({target})",
                    "not measured" if v is None else fmt_time(v), None if v is None else v <= 2000))
    m = svc.get("rss") or {}
    v = m.get("rss_kib")
    out.append((f"cookiefs RSS ≤ 64 MiB with 10,000 sessions",
                "not measured" if v is None else f"{v / 1024:.1f} MiB ({m['sessions']:,} sessions)",
                None if v is None else (v <= 64 * 1024 if (m.get("held") or 0) >= 10000 else None)))
    lines = ["| goal | measured | met |", "|---|---|---|"]
    for g, m_, ok in out:
        lines.append(f"| {g} | {m_} | {'yes' if ok else 'no' if ok is False else '?'} |")
    return "\n".join(lines)


def chart(results, target_names, path, root):
    """Grouped bars of the median ratio to tmpfs, log scale, via gnuplot."""
    if not shutil.which("gnuplot"):
        log("gnuplot not installed: no chart")
        return
    names = [t for t in target_names if t != "tmpfs"]
    data = os.path.join(root, "chart.dat")
    with open(data, "w") as f:
        f.write("workload " + " ".join(names) + "\n")
        for w in results:
            vals = [med(ratio_rounds(results, w, t, "tmpfs")) for t in names]
            f.write(w + " " + " ".join("NaN" if v is None else f"{v:.5f}" for v in vals) + "\n")
    plots = ", ".join(f"'{data}' using {i + 2}:xtic(1) title columnheader"
                      for i in range(len(names)))
    # One distinct colour per target (gnuplot's default cycle repeats after 8).
    colours = ["#9400d3", "#009e73", "#56b4e9", "#e69f00", "#f0e442", "#0072b2", "#e51e10",
               "#000000", "#cc79a7", "#7f7f7f", "#8c564b", "#17becf"]
    linetypes = "\n".join(f"set linetype {i + 1} lc rgb '{c}'" for i, c in enumerate(colours))
    script = f"""set terminal pngcairo size 1400,560 font ',10'
set output '{path}'
{linetypes}
set termoption noenhanced
set title 'cookie-jar workloads: throughput relative to tmpfs (same round, median of rounds)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set logscale y
set yrange [0.001:2]
set ylabel 'ops/s ÷ tmpfs ops/s (log)'
set grid ytics
set key outside right top vertical
set xtics rotate by -20
plot {plots}, 1 with lines lt 0 notitle
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True, capture_output=True)
    log(f"chart written to {path}")


def parse_args():
    p = argparse.ArgumentParser(description="cookiefs benchmark harness (see docs/performance.md)")
    p.add_argument("--build-dir", default=os.environ.get("COOKIEFS_BUILD_DIR",
                                                         os.path.join(SOURCE_DIR, "build")))
    p.add_argument("--quick", action="store_true",
                   help="short run for CI (< 2 min): small budgets, 1,000 sessions for RSS, "
                        "no callgrind; never fails on timings")
    p.add_argument("--rounds", type=int, help="rounds (default 3)")
    p.add_argument("--targets", help="comma-separated (default: all; --quick: all but "
                   + ", ".join(QUICK_SKIPS) + ")")
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--work-dir", default="/var/tmp",
                   help="where the run's temp dir lives (disk: ext4 target, PostgreSQL)")
    p.add_argument("--cookiefs-cache", choices=["disk", "tmpfs"], default="disk",
                   help="where cookiefs keeps its cache dir (default: the local disk)")
    p.add_argument("--no-service", action="store_true", help="skip the service-level benchmarks")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when a target, workload or service benchmark failed to run "
                        "(never because of timings): the CI regression guard")
    p.add_argument("--chart", help="PNG path (default: docs/performance.png on a full run)")
    p.add_argument("--json", help="write all raw results here")
    p.add_argument("--markdown", help="write the tables here too")
    args = p.parse_args()
    args.rounds = args.rounds or 3
    if args.targets is None:
        args.targets = ",".join(t for t in TARGETS if not (args.quick and t in QUICK_SKIPS))
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    if args.chart is None and not args.quick:
        args.chart = os.path.join(SOURCE_DIR, "docs", "performance.png")
    return args


def params(quick):
    if quick:
        return {"budget": 0.2, "min_ops": 5, "max_ops": 5000, "cold_sessions": 10,
                "timeout": 120, "service_seconds": 2, "handoff_sessions": 10,
                "rss_sessions": 1000}
    return {"budget": 2.0, "min_ops": 20, "max_ops": 100000, "cold_sessions": 50,
            "timeout": 240, "service_seconds": 10, "handoff_sessions": 200,
            "rss_sessions": 10000}


def main():
    args = parse_args()
    if os.geteuid() != 0:
        print("bench: needs root (tmpfs and FUSE mounts, private sshd)", file=sys.stderr)
        return 2
    p = params(args.quick)
    target_names = [t for t in args.targets.split(",") if t]
    if "tmpfs" not in target_names:
        target_names.insert(0, "tmpfs")  # every ratio needs it
    workloads = [w for w in args.workloads.split(",") if w]
    for w in workloads:
        if w not in WORKLOADS:
            print(f"bench: unknown workload {w!r} (known: {', '.join(WORKLOADS)})",
                  file=sys.stderr)
            return 2
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    teardown = Teardown()
    root = tempfile.mkdtemp(prefix="cookiefs-bench-", dir=args.work_dir)
    teardown.add("remove temp dir", shutil.rmtree, root, True)
    started = time.monotonic()
    try:
        for sub in ("logs", "mnt", "bin", "disk"):
            os.makedirs(os.path.join(root, sub))
        tmpfs_root = os.path.join(root, "tmpfs")
        os.makedirs(tmpfs_root)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2g,mode=0755", "cookiefs-bench",
                        tmpfs_root], check=True)
        teardown.add("unmount tmpfs", subprocess.run, ["umount", "-l", tmpfs_root])
        disk_root = os.path.join(root, "disk")
        stack = tg.CookiefsStack(root, args.build_dir, disk_root)
        needs_stack = any(t.startswith("cookiefs") for t in target_names) or not args.no_service
        stack_error = None
        if needs_stack:
            try:
                stack.start(teardown)
            except Exception as exc:  # noqa: BLE001 - the other targets still run
                stack_error = f"storage stack: {exc}"
                log(stack_error)
        made = make_targets(target_names, root, tmpfs_root, disk_root, stack, args.cookiefs_cache)
        live, errors = [], {}
        for name, t in made.items():
            try:
                if name.startswith("cookiefs") and stack_error:
                    raise RuntimeError(stack_error)
                if t.halt_poll:
                    t.halt_poll.check(teardown)
                t.start(teardown)
                live.append(name)
                log(f"target {name} ready")
            except Exception as exc:  # noqa: BLE001
                if name == "tmpfs":
                    raise
                log(f"target {name} unavailable: {str(exc).splitlines()[0]}")
                for w in workloads:
                    errors[(w, name)] = f"target unavailable: {str(exc).splitlines()[0]}"

        results = {w: {} for w in workloads}
        stalled = {}
        for r in range(args.rounds):
            for w in workloads:
                # Rotate the order so no target always runs right after another.
                order = live[r % len(live):] + live[:r % len(live)]
                for name in order:
                    if name in stalled:
                        errors.setdefault((w, name), stalled[name])
                        continue
                    if made[name].failure():
                        stalled[name] = made[name].failure().splitlines()[0]
                        errors.setdefault((w, name), stalled[name])
                        log(f"target {name} is down: {stalled[name]}")
                        continue
                    try:
                        res = run_workload(made[name], w, r, p)
                        results[w].setdefault(name, {})[r] = res
                    except subprocess.TimeoutExpired:
                        # A stuck mount would stall every later workload too.
                        stalled[name] = f"timed out after {p['timeout']}s (target skipped after)"
                        errors[(w, name)] = stalled[name]
                        log(f"round {r + 1} {w} on {name}: {stalled[name]}")
                    except Exception as exc:  # noqa: BLE001 - a failing target is a result
                        errors[(w, name)] = str(exc)
                        log(f"round {r + 1} {w} on {name}: {exc}")
            log(f"round {r + 1}/{args.rounds} done ({time.monotonic() - started:.0f}s)")

        svc = {}
        bench_bin = os.path.join(args.build_dir, "bench", "cookiefs-service-bench")
        service_down = None
        if needs_stack and not stack_error and stack.failure():
            service_down = stack.failure().splitlines()[0]
            log(f"service benchmarks limited to pgbench: {service_down}")
        if not args.no_service and not stack_error:
            if os.access(bench_bin, os.X_OK):
                svc["commits"] = service.commits_vs_pgbench(stack, bench_bin, root, args.rounds,
                                                            p["service_seconds"], service_down)
                if "cookiefs" in live and not stack.failure():
                    # The commit benchmarks leave PostgreSQL gigabytes of WAL
                    # behind them; without this the checkpoint they force runs
                    # during the hand-offs, which then time the disk.
                    try:
                        service.psql(stack, "CHECKPOINT")
                    except subprocess.CalledProcessError as exc:
                        log(f"CHECKPOINT before the hand-offs failed: {exc}")
                    svc["handoff"] = service.handoff(stack, bench_bin, root, made["cookiefs"].dir,
                                                     p["handoff_sessions"])
                if not args.quick and shutil.which("valgrind") and not service_down:
                    svc["instructions"] = service.callgrind_instructions(stack, bench_bin, root)
            else:
                log(f"{bench_bin} not built: no service benchmarks")
            if "cookiefs" in live and not stack.failure():
                cache = tmpfs_root if args.cookiefs_cache == "tmpfs" else disk_root
                svc["rss"] = service.mount_rss(stack, teardown, cache, p["rss_sessions"])

        md = (f"### Workloads ({args.rounds} rounds, {'quick' if args.quick else 'full'} mode)\n\n"
              f"{table(results, target_names, errors)}\n\n### Service level\n\n"
              f"{service_table(svc)}\n\n### Goals\n\n{goals(results, svc)}\n")
        print(md)
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write(md)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"results": results, "service": svc,
                           "errors": {f"{w}/{t}": e for (w, t), e in errors.items()},
                           "params": p, "rounds": args.rounds}, f, indent=1)
        if args.chart:
            chart(results, target_names, args.chart, root)
        log(f"finished in {time.monotonic() - started:.0f}s")
        broken = [f"{w} on {t}: {e.splitlines()[0]}" for (w, t), e in errors.items()]
        broken += [f"{k}: {v['error'].splitlines()[0]}" for k, v in svc.items()
                   if isinstance(v, dict) and "error" in v]
        broken += [f"service {k}" for k in ("service_error", "pgbench_error")
                   if k in svc.get("commits", {})]
        broken += [e for e in (stack_error, service_down) if e]
        if args.strict and broken:
            log(f"--strict: {len(broken)} benchmark(s) could not run; first: {broken[0]}")
            return 1
        return 0
    except Interrupted as exc:
        log(f"interrupted ({exc}); tearing down")
        return 1
    except Exception as exc:  # noqa: BLE001 - one line, then tear down
        log(f"failed: {exc}")
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not stop the teardown
        teardown.run()


if __name__ == "__main__":
    sys.exit(main())
