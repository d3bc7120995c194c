#!/usr/bin/env python3
"""One benchmark workload on one target directory, as a child process of
bench/run.py. Prints one JSON object on stdout:

  {"workload": ..., "ops": N, "seconds": S, "ops_per_s": ..., "p50_us": ...,
   "p99_us": ..., "fuse_requests": {...} or null}

Each workload does what a real engine does to its cookie jar (measured with
strace on Debian 12, see /work/shared/notes/engines.md), through the real
sqlite3 library and plain file I/O:

  soup-db       libsoup's SQLite jar: synchronous=OFF, secure_delete, rollback
                journal (DELETE mode), 300-cookie jar; one op = one replaced
                cookie = DELETE + INSERT as two autocommit transactions.
  soup-db-sync  the same with synchronous=FULL.
  chromium      Chromium's jar: journal_mode=TRUNCATE, synchronous=FULL,
                read-only mmap of the db; one op = one batched commit of 50
                changes (alternately an access-time UPDATE and a replace).
  soup-text     libsoup's text jar (300 lines); ops alternate an O_APPEND of
                one line and a rewrite of the whole jar in place with O_TRUNC.
  read-hot      open + read 16 KiB + close of a jar already read once.
  read-cold     open + read 64 KiB + close of a session this reader has never
                seen: written and fsync'ed through --dir, read through
                --reader-dir (see docs/performance.md for what "never seen"
                means on each target).
  concurrent-64 64 threads, one session each, each doing soup-db ops at the
                same time; ops/s is the total of all sessions.
  concurrent-64-procs  the same with 64 processes (engines are processes,
                and one Python interpreter serialises its threads' own work).

The timed loop runs until --budget seconds have passed, but at least
--min-ops and at most --max-ops operations. Setup (creating the jar) is not
timed. Single-threaded except concurrent-64, whose threads share nothing but
the result list, and concurrent-64-procs (forked writers).
"""

import argparse
import contextlib
import json
import multiprocessing
import os
import random
import sqlite3
import statistics
import sys
import threading
import time
import urllib.request
import zlib

JAR_COOKIES = 300
CHROMIUM_BATCH = 50
CONCURRENT_SESSIONS = 64


def cookie_row(rng, i):
    return (f"c{i:04d}", "v" + "".join(rng.choices("abcdef0123456789", k=rng.randint(24, 96))),
            f".site{i % 40}.example", "/", 2_000_000_000 + i)


# ------------------------------------------------------------- libsoup SQLite

SOUP_SCHEMA = ("CREATE TABLE IF NOT EXISTS moz_cookies (id INTEGER PRIMARY KEY, name TEXT, "
               "value TEXT, host TEXT, path TEXT, expiry INTEGER, lastAccessed INTEGER, "
               "isSecure INTEGER, isHttpOnly INTEGER, sameSite INTEGER)")


class SoupJar:
    """libsoup's cookies.sqlite: open once for the session, autocommit."""

    def __init__(self, path, synchronous, seed):
        self.rng = random.Random(seed)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute(f"PRAGMA synchronous = {synchronous}")
        self.db.execute("PRAGMA secure_delete = 1")
        self.db.execute(SOUP_SCHEMA)
        # Filling the jar is setup: one transaction, not timed.
        self.db.execute("BEGIN")
        for i in range(JAR_COOKIES):
            name, value, host, path_, expiry = cookie_row(self.rng, i)
            self.db.execute("INSERT INTO moz_cookies VALUES(NULL, ?, ?, ?, ?, ?, NULL, 0, 1, 0)",
                            (name, value, host, path_, expiry))
        self.db.execute("COMMIT")

    def replace_one(self):
        i = self.rng.randrange(JAR_COOKIES)
        name, value, host, path_, expiry = cookie_row(self.rng, i)
        # libsoup: a replaced cookie is a delete and an insert, each its own transaction.
        self.db.execute("DELETE FROM moz_cookies WHERE name=? AND host=?", (name, host))
        self.db.execute("INSERT INTO moz_cookies VALUES(NULL, ?, ?, ?, ?, ?, NULL, 0, 1, 0)",
                        (name, value, host, path_, expiry))

    def close(self):
        self.db.close()


# ------------------------------------------------------------- Chromium SQLite

CHROMIUM_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS cookies(creation_utc INTEGER NOT NULL, host_key TEXT NOT NULL, "
    "top_frame_site_key TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL, "
    "encrypted_value BLOB NOT NULL, path TEXT NOT NULL, expires_utc INTEGER NOT NULL, "
    "is_secure INTEGER NOT NULL, is_httponly INTEGER NOT NULL, last_access_utc INTEGER NOT NULL, "
    "has_expires INTEGER NOT NULL, is_persistent INTEGER NOT NULL, priority INTEGER NOT NULL, "
    "samesite INTEGER NOT NULL, source_scheme INTEGER NOT NULL, source_port INTEGER NOT NULL, "
    "last_update_utc INTEGER NOT NULL, "
    "UNIQUE (host_key, top_frame_site_key, name, path, source_scheme, source_port))")


class ChromiumJar:
    def __init__(self, path, seed):
        self.rng = random.Random(seed)
        self.tick = 13_300_000_000_000_000
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode = TRUNCATE")
        self.db.execute("PRAGMA synchronous = FULL")
        self.db.execute("PRAGMA mmap_size = 268435456")
        self.db.execute(CHROMIUM_SCHEMA)
        self.db.execute("BEGIN")
        for i in range(JAR_COOKIES):
            self.db.execute("INSERT INTO cookies VALUES (?,?,'',?,'',?,'/',?,1,1,?,1,1,1,0,2,443,?)",
                            self.row(i))
        self.db.execute("COMMIT")

    def row(self, i):
        self.tick += 1
        blob = b"v10" + self.rng.randbytes(48)
        return (self.tick, f".site{i % 40}.example", f"c{i:04d}", blob, self.tick + 10**13,
                self.tick, self.tick)

    def commit_batch(self):
        self.db.execute("BEGIN")
        for k in range(CHROMIUM_BATCH):
            i = self.rng.randrange(JAR_COOKIES)
            if k % 2 == 0:
                self.tick += 1
                self.db.execute("UPDATE cookies SET last_access_utc=? WHERE host_key=? AND name=?",
                                (self.tick, f".site{i % 40}.example", f"c{i:04d}"))
            else:
                self.db.execute("DELETE FROM cookies WHERE host_key=? AND name=?",
                                (f".site{i % 40}.example", f"c{i:04d}"))
                self.db.execute(
                    "INSERT INTO cookies VALUES (?,?,'',?,'',?,'/',?,1,1,?,1,1,1,0,2,443,?)",
                    self.row(i))
        self.db.execute("COMMIT")

    def close(self):
        self.db.close()


# ------------------------------------------------------------- text jar


def text_line(rng, i):
    _, value, host, path_, expiry = cookie_row(rng, i)
    return f"#HttpOnly_{host}\tTRUE\t{path_}\tFALSE\t{expiry}\tc{i:04d}\t{value}\n"


class TextJar:
    """libsoup's cookies.txt: add = O_APPEND one line; replace = O_TRUNC rewrite."""

    def __init__(self, path, seed):
        self.path = path
        self.rng = random.Random(seed)
        self.lines = [text_line(self.rng, i) for i in range(JAR_COOKIES)]
        self.rewrite()
        self.n = 0

    def rewrite(self):
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, "".join(self.lines).encode())
        finally:
            os.close(fd)

    def change_one(self):
        self.n += 1
        i = self.rng.randrange(JAR_COOKIES)
        self.lines[i] = text_line(self.rng, i)
        if self.n % 2:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, self.lines[i].encode())
            finally:
                os.close(fd)
        else:
            self.rewrite()


# ------------------------------------------------------------- reads


def write_file(path, size, seed, sync=False, drop_cache=False):
    data = random.Random(seed).randbytes(size)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        if sync or drop_cache:
            os.fsync(fd)
        if drop_cache:
            # The only per-file way to make the next read come from the disk.
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def read_whole(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        while os.read(fd, 1 << 20):
            pass
    finally:
        os.close(fd)


# ------------------------------------------------------------- driver


class Loop:
    """Runs op() until the budget is spent; records per-op latency in ns."""

    def __init__(self, budget, min_ops, max_ops):
        self.budget, self.min_ops, self.max_ops = budget, min_ops, max_ops

    def run(self, op, lat, until=None):
        """`until`: a time.monotonic() deadline shared with other processes
        instead of the budget from now."""
        start = time.perf_counter_ns()
        deadline = start + int(self.budget * 1e9)
        if until is not None:
            deadline = start + int((until - time.monotonic()) * 1e9)
        n = 0
        while n < self.max_ops and (n < self.min_ops or time.perf_counter_ns() < deadline):
            t0 = time.perf_counter_ns()
            op()
            lat.append(time.perf_counter_ns() - t0)
            n += 1
        return time.perf_counter_ns() - start


def scrape_fuse_requests(urls):
    """Sum of cookiefs_fuse_requests_total per label set over all mounts."""
    if not urls:
        return None
    counts = {}
    for url in urls:
        with urllib.request.urlopen(url, timeout=10) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith("cookiefs_fuse_requests_total"):
                    key, _, value = line.rpartition(" ")
                    label = key[len("cookiefs_fuse_requests_total"):] or "{}"
                    counts[label] = counts.get(label, 0.0) + float(value)
    return counts


def session_dir(root, sid):
    path = os.path.join(root, sid)
    os.mkdir(path)
    return path


def run(args):
    loop = Loop(args.budget, args.min_ops, args.max_ops)
    lat = []
    # Same jar contents on every target: the seed ignores a target's tag.
    seed = zlib.crc32(args.session_prefix.removeprefix("wb.").encode()) & 0xFFFF
    closers = []
    measured_ops = None  # operations the timed region did, when not len(lat)
    if args.workload in ("soup-db", "soup-db-sync"):
        sync = "OFF" if args.workload == "soup-db" else "FULL"
        jar = SoupJar(os.path.join(session_dir(args.dir, args.session_prefix), "cookies.sqlite"),
                      sync, seed)
        closers.append(jar.close)
        op = jar.replace_one
    elif args.workload == "chromium":
        jar = ChromiumJar(os.path.join(session_dir(args.dir, args.session_prefix), "Cookies"), seed)
        closers.append(jar.close)
        op = jar.commit_batch
    elif args.workload == "soup-text":
        op = TextJar(os.path.join(session_dir(args.dir, args.session_prefix), "cookies.txt"),
                     seed).change_one
    elif args.workload == "read-hot":
        path = os.path.join(session_dir(args.dir, args.session_prefix), "cookies.txt")
        write_file(path, 16 * 1024, seed)
        read_whole(path)
        op = lambda: read_whole(path)  # noqa: E731
    elif args.workload == "read-cold":
        # Every op needs a session the reader has never seen, so they are all
        # written (and made durable) first; the count replaces the time budget.
        n = args.cold_sessions
        for i in range(n):
            write_file(os.path.join(session_dir(args.dir, f"{args.session_prefix}-{i}"),
                                    "cookies.sqlite"), 64 * 1024, seed + i, sync=True,
                       drop_cache=args.drop_cache)
        paths = iter([os.path.join(args.reader_dir, f"{args.session_prefix}-{i}", "cookies.sqlite")
                      for i in range(n)])
        op = lambda: read_whole(next(paths))  # noqa: E731
        loop = Loop(0, n, n)
    elif args.workload == "concurrent-64":
        return run_concurrent(args, seed)
    elif args.workload == "concurrent-64-procs":
        return run_concurrent_procs(args, seed)
    else:
        raise SystemExit(f"unknown workload {args.workload}")

    before = scrape_fuse_requests(args.metrics)
    elapsed = loop.run(op, lat)
    after = scrape_fuse_requests(args.metrics)
    for close in closers:
        close()
    return summary(args, lat, elapsed, before, after, measured_ops)


def run_concurrent(args, seed):
    jars = [SoupJar(os.path.join(session_dir(args.dir, f"{args.session_prefix}-{i}"),
                                 "cookies.sqlite"), "OFF", seed + i)
            for i in range(CONCURRENT_SESSIONS)]
    lats = [[] for _ in jars]
    barrier = threading.Barrier(len(jars) + 1)
    per_thread = Loop(args.budget, max(1, args.min_ops // len(jars)),
                      max(1, args.max_ops // len(jars)))
    errors = []

    def worker(i):
        barrier.wait()
        try:
            per_thread.run(jars[i].replace_one, lats[i])
        except Exception as exc:  # noqa: BLE001 - reported by the parent
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(jars))]
    for t in threads:
        t.start()
    before = scrape_fuse_requests(args.metrics)
    start = time.perf_counter_ns()
    barrier.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter_ns() - start
    after = scrape_fuse_requests(args.metrics)
    for jar in jars:
        jar.close()
    if errors:
        raise RuntimeError(f"{len(errors)} writer threads failed, first: {errors[0]}")
    return summary(args, [x for lat in lats for x in lat], elapsed, before, after, None)


def concurrent_writer(args, seed, i, ready, go_at, results):
    """One forked writer of concurrent-64-procs: its jar, then changes from the
    common start time until the common deadline (see run_concurrent_procs)."""
    try:
        jar = SoupJar(os.path.join(session_dir(args.dir, f"{args.session_prefix}-{i}"),
                                   "cookies.sqlite"), "OFF", seed + i)
        ready.wait(timeout=300)
        while go_at.value == 0.0:
            time.sleep(0.001)
        start = go_at.value
        time.sleep(max(0.0, start - time.monotonic()))
        lat = []
        Loop(args.budget, max(1, args.min_ops // CONCURRENT_SESSIONS),
             max(1, args.max_ops // CONCURRENT_SESSIONS)).run(jar.replace_one, lat,
                                                                until=start + args.budget)
        end = time.monotonic()
        jar.close()
        results.put((i, lat, end, None))
    except Exception as exc:  # noqa: BLE001 - reported by the parent
        with contextlib.suppress(Exception):
            ready.abort()
        results.put((i, [], None, repr(exc)))


def run_concurrent_procs(args, seed):
    """64 forked writers. Each sets up its jar and waits; the parent then reads
    the request counters and sets one start time a little ahead, which every
    writer sleeps until on its own timer (a barrier's release wakes 64
    processes one after another, seconds apart on two CPUs); every writer
    stops at the same deadline. ops/s = all changes / (last end - start)."""
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Barrier(CONCURRENT_SESSIONS + 1)
    go_at = ctx.Value("d", 0.0)
    results = ctx.Queue()
    procs = [ctx.Process(target=concurrent_writer, args=(args, seed, i, ready, go_at, results))
             for i in range(CONCURRENT_SESSIONS)]
    for p in procs:
        p.start()
    before = None
    start = time.monotonic()
    try:
        ready.wait(timeout=300)  # every jar is set up
        before = scrape_fuse_requests(args.metrics)
        start = time.monotonic() + 0.2
        go_at.value = start
    except threading.BrokenBarrierError:
        go_at.value = start  # a writer failed: its error comes through the queue
    # Drained before the joins: a child with a big result blocks on its pipe.
    outcomes = [results.get(timeout=600) for _ in procs]
    after = scrape_fuse_requests(args.metrics)
    for p in procs:
        p.join()
    errors = [err for *_, err in outcomes if err]
    if errors:
        raise RuntimeError(f"{len(errors)} writer processes failed, first: {errors[0]}")
    elapsed_ns = int((max(end for _, _, end, _ in outcomes) - start) * 1e9)
    return summary(args, [x for _, lat, _, _ in outcomes for x in lat], elapsed_ns, before, after,
                   None)


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


def summary(args, lat, elapsed_ns, before, after, measured_ops):
    ops = measured_ops if measured_ops is not None else len(lat)
    lat.sort()
    result = {
        "workload": args.workload,
        "ops": ops,
        "seconds": elapsed_ns / 1e9,
        "ops_per_s": ops / (elapsed_ns / 1e9) if elapsed_ns else None,
        "p50_us": percentile(lat, 0.50) / 1e3 if lat else None,
        "p99_us": percentile(lat, 0.99) / 1e3 if lat else None,
        "mean_us": statistics.fmean(lat) / 1e3 if lat else None,
        "fuse_requests": None,
    }
    if before is not None and after is not None:
        delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
        result["fuse_requests"] = {k: v for k, v in delta.items() if v > 0}
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", required=True)
    p.add_argument("--dir", required=True, help="target directory (sessions are made in it)")
    p.add_argument("--reader-dir", help="read-cold: the same sessions seen by another reader")
    p.add_argument("--session-prefix", required=True, help="unique per run, e.g. r1-soup-db")
    p.add_argument("--budget", type=float, default=2.0, help="seconds of timed operations")
    p.add_argument("--min-ops", type=int, default=20)
    p.add_argument("--max-ops", type=int, default=100000)
    p.add_argument("--cold-sessions", type=int, default=30)
    p.add_argument("--drop-cache", action="store_true",
                   help="read-cold: fsync + POSIX_FADV_DONTNEED each file after writing it")
    p.add_argument("--metrics", action="append", default=[],
                   help="metrics URL to sample cookiefs_fuse_requests_total from (repeatable)")
    args = p.parse_args()
    args.reader_dir = args.reader_dir or args.dir
    try:
        result = run(args)
    except Exception as exc:  # noqa: BLE001 - one clear line for the harness
        print(f"workload {args.workload} failed: {exc!r}", file=sys.stderr)
        return 1
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
