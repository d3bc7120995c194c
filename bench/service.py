"""Service-level benchmarks (no FUSE in the path), run by bench/run.py against
the CookiefsStack it started:

  commits_vs_pgbench  durable 16 KiB snapshot commits/s through the storage
                      service with 64 concurrent writers, interleaved in rounds
                      with pgbench's single-row 16 KiB upsert at 64 clients on
                      the same database.
  handoff             assign -> ready p50/p99 for 64 KiB sessions written by
                      mount A and handed to mount B.
  instructions        storage-service CPU instructions per commit, from two
                      callgrind runs with different commit counts (the
                      difference cancels start-up and shutdown).
  mount_rss           VmRSS of a fresh cookiefs mount holding N sessions.

Each returns a dict for the report; a benchmark that cannot run (a daemon
missing a feature) returns {"error": "..."} so the table shows a TODO row.
Single-threaded.
"""

import json
import os
import random
import re
import statistics
import subprocess
import time
import urllib.request

from targets import Teardown, free_port, log, port_open, spawn, stop_process, wait_for

PGBENCH_SCRIPT = """\\set payload_seed random(1, 1000000000)
INSERT INTO bench_jar (id, data) VALUES (:client_id, repeat(md5(:payload_seed::text), 512))
  ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data;
"""


def run_json(cmd, timeout):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{os.path.basename(cmd[0])} exited {out.returncode}: "
                           f"{out.stderr.strip()[-300:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def psql(stack, sql):
    # initdb --auth=trust: no password over loopback TCP.
    subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(stack.pg_port), "-U", "cookiefs", "-d",
                    "cookiefs", "-v", "ON_ERROR_STOP=1", "-qc", sql], check=True,
                   capture_output=True)


def pgbench_tps(stack, root, seconds, clients=64):
    script = os.path.join(root, "upsert16k.sql")
    with open(script, "w") as f:
        f.write(PGBENCH_SCRIPT)
    os.chmod(script, 0o644)
    out = subprocess.run(["pgbench", "-n", "-c", str(clients), "-j", "2", "-T", str(int(seconds)),
                          "-M", "prepared", "-f", script, "-h", "127.0.0.1", "-p",
                          str(stack.pg_port), "-U", "cookiefs", "cookiefs"],
                         capture_output=True, text=True, timeout=seconds * 10 + 120)
    if out.returncode != 0:
        raise RuntimeError(f"pgbench exited {out.returncode}: {out.stderr.strip()[-300:]}")
    m = re.search(r"tps = ([0-9.]+) \(without initial connection", out.stdout)
    lat = re.search(r"latency average = ([0-9.]+) ms", out.stdout)
    return {"tps": float(m.group(1)), "latency_avg_ms": float(lat.group(1)) if lat else None}


def commits_vs_pgbench(stack, bench_bin, root, rounds, seconds, service_down=None):
    # Stored uncompressed (STORAGE EXTERNAL) so each upsert writes its 16 KiB,
    # as a snapshot of random cookie bytes would.
    psql(stack, "CREATE TABLE IF NOT EXISTS bench_jar (id int PRIMARY KEY, data text); "
                "ALTER TABLE bench_jar ALTER data SET STORAGE EXTERNAL;")
    out = {"service": [], "pgbench": []}
    if service_down:
        out["service_error"] = service_down
    for r in range(rounds):
        try:
            if service_down:
                raise RuntimeError(service_down)
            out["service"].append(run_json(
                [bench_bin, "commits", "--storage", stack.storage, "--writers", "64",
                 "--connections", "8", "--size", "16384", "--seconds", str(seconds),
                 "--prefix", f"svc-r{r}-{random.randrange(1 << 30):x}"], seconds * 10 + 120))
        except Exception as exc:  # noqa: BLE001 - reported as a TODO row
            out["service_error"] = str(exc)
            if not service_down:
                log(f"service commits: {exc}")
        try:
            out["pgbench"].append(pgbench_tps(stack, root, seconds))
        except Exception as exc:  # noqa: BLE001
            out["pgbench_error"] = str(exc)
            log(f"pgbench: {exc}")
    return out


def write_session(mount, sid, size, seed):
    os.mkdir(os.path.join(mount, sid))
    fd = os.open(os.path.join(mount, sid, "cookies.sqlite"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(fd, random.Random(seed).randbytes(size))
        os.fsync(fd)  # committed in PostgreSQL when this returns
    finally:
        os.close(fd)


def handoff(stack, bench_bin, root, mount_a, sessions):
    try:
        ids = [f"handoff-{i}-{random.randrange(1 << 30):x}" for i in range(sessions)]
        for i, sid in enumerate(ids):
            write_session(mount_a, sid, 64 * 1024, i)
        path = os.path.join(root, "handoff-sessions.txt")
        with open(path, "w") as f:
            f.write("\n".join(ids) + "\n")
        return run_json([bench_bin, "handoff", "--storage", stack.storage, "--sessions-file", path,
                         "--to", "bench-b"], 600)
    except Exception as exc:  # noqa: BLE001 - reported as a TODO row
        return {"error": str(exc)}


def callgrind_instructions(stack, bench_bin, root, counts=(40, 240)):
    """Instructions the storage service executes per commit: the difference of
    two runs with different commit counts, divided by the count difference."""
    totals = []
    for n in counts:
        teardown = Teardown()
        try:
            port = free_port()
            out_file = os.path.join(root, f"callgrind.{n}.out")
            log_path = os.path.join(root, "logs", f"storage-callgrind-{n}.log")
            proc = spawn(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}",
                          stack.binary("storage-service"), "--database-url", stack.database_url,
                          "--listen", f"127.0.0.1:{port}", "--metrics-listen",
                          f"127.0.0.1:{free_port()}"], log_path, teardown, "storage-service")
            wait_for(lambda: port_open(port), "storage-service under callgrind", proc, log_path,
                     timeout=180)
            run_json([bench_bin, "commits", "--storage", f"127.0.0.1:{port}", "--writers", "8",
                      "--connections", "2", "--size", "16384", "--commits", str(n), "--prefix",
                      f"cg-{n}-{random.randrange(1 << 30):x}"], 900)
            stop_process(proc, timeout=120)
            with open(out_file) as f:
                m = re.search(r"^(?:summary|totals):\s+(\d+)", f.read(), re.M)
            totals.append(int(m.group(1)))
        except Exception as exc:  # noqa: BLE001
            return {"error": str(exc)}
        finally:
            teardown.run()
    # The 8 session-creating commits are not in --commits; both runs have them.
    per_commit = (totals[1] - totals[0]) / (counts[1] - counts[0])
    return {"instructions_per_commit": per_commit, "runs": dict(zip(counts, totals))}


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def metric_value(url, name):
    with urllib.request.urlopen(url, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


def drop_kernel_inodes():
    """Asks the kernel to drop unused dentries and inodes: it sends FORGET for
    every cookiefs inode no process holds open, and the mount closes their
    backing descriptors. False when this kernel does not let us."""
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2\n")
        return True
    except OSError:
        return False


def mount_rss(stack, teardown, cache_root, sessions):
    """Resident memory of a mount holding `sessions` sessions. The mount keeps
    one descriptor per inode the kernel remembers; a host whose open-file
    limit is below two per session (this VM: 20,000, without CAP_SYS_RESOURCE
    to lift it) would stop at EMFILE, so the kernel's unused dentries are
    dropped every 1,000 sessions. The sessions stay held by the mount
    (cookiefs_sessions_held is reported), only the kernel forgets them."""
    try:
        mnt, proc, metrics = stack.mount(teardown, "rss", cache_root)
        idle = rss_kib(proc.pid)
        tag = f"{random.randrange(1 << 30):x}"
        dropped = 0
        start = time.monotonic()
        for i in range(sessions):
            d = os.path.join(mnt, f"rss-{tag}-{i}")
            os.mkdir(d)
            with open(os.path.join(d, "cookies.txt"), "w") as f:
                f.write(f".example.com\tTRUE\t/\tFALSE\t2000000000\tc\tv{i}\n")
            if i % 1000 == 999 and drop_kernel_inodes():
                dropped += 1
        made = time.monotonic() - start
        listed = len([n for n in os.listdir(mnt) if n.startswith("rss-")])
        time.sleep(2)  # let the asynchronous commits drain before sampling
        return {"sessions": sessions, "listed": listed, "rss_idle_kib": idle,
                "rss_kib": rss_kib(proc.pid), "create_seconds": made,
                "held": metric_value(metrics, "cookiefs_sessions_held"),
                "kernel_cache_drops": dropped}
    except Exception as exc:  # noqa: BLE001
        return {"error": str(exc)}
