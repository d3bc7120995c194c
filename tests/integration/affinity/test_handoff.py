"""Hand-off and fencing between real mounts: drain under continuous writes,
a forced move while the old owner is cut off (its late commits are fenced off
and quarantined), strict vs auto affinity, concurrent assigns."""

import concurrent.futures
import errno
import glob
import json
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import affinity_stack as af  # noqa: E402
from affinity_stack import harness  # noqa: E402

DEADLINE = harness.PROPAGATION_DEADLINE
RECORD = 64


def record(i):
    return (f"cookie-{i:012d}".ljust(RECORD - 1) + "\n").encode()


class ContinuousWriter(threading.Thread):
    """pwrite()s record(i) over offset 0 of one file without pause until the
    mount refuses (EROFS) or stop() is called; remembers the last write the
    mount acknowledged."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path = path
        self.last_ok = None
        self.refused = threading.Event()
        self.stopping = threading.Event()
        self.error = None
        self.count = 0

    def run(self):
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            i = 0
            while not self.stopping.is_set():
                i += 1
                try:
                    os.pwrite(fd, record(i), 0)
                except OSError as exc:
                    if exc.errno == errno.EROFS:
                        self.refused.set()
                        return
                    self.error = exc
                    return
                self.last_ok = i
                self.count += 1
        finally:
            os.close(fd)

    def stop(self):
        self.stopping.set()
        self.join(30)


class Handoff(harness.StackTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.a = cls.stack.mount("host-a")
        cls.b = cls.stack.mount("host-b")

    def wait_ready(self, mount, session):
        res = af.shim(self.stack, "--timeout", "20s", "wait-ready", session,
                      control=af.control_socket(mount))
        self.assertEqual(res.returncode, 0, f"wait-ready: {res.stderr}")

    def test_handoff_under_continuous_writes(self):
        for n, (src, dst) in enumerate([(self.a, self.b), (self.b, self.a), (self.a, self.b)]):
            session = "cont-writes"
            res = af.assign(self.stack, session, src.engine_id)
            self.wait_ready(src, session)
            writer = ContinuousWriter(os.path.join(src.session(session), "cookies.txt"))
            writer.start()
            harness.poll(lambda: writer.count > 50 or writer.error, 20, what="writer running")
            res = af.assign(self.stack, session, dst.engine_id)
            reply = af.json_reply(res)
            self.assertTrue(reply["drained"], f"round {n}: old owner did not drain: {reply}")
            self.assertTrue(reply["ready"], f"round {n}: new owner not ready: {reply}")
            # The drain happened before assign answered: A's writes are refused now.
            self.assertTrue(writer.refused.wait(10),
                            f"round {n}: A still accepts writes after the drain")
            writer.join(10)
            self.assertIsNone(writer.error)
            expected = record(writer.last_ok)
            # Ready means prefetched: no waiting for propagation on B.
            got = harness.read_bytes(os.path.join(dst.session(session), "cookies.txt"))
            self.assertEqual(got, expected,
                             f"round {n}: B has {got[:24]!r}, A's last acknowledged write was "
                             f"{expected[:24]!r}")
            self.assertEqual(
                harness.read_bytes(os.path.join(src.session(session), "cookies.txt")), expected)

    def test_strict_and_auto_affinity(self):
        strict_a = self.stack.mount("strict-a", affinity="strict")
        strict_b = self.stack.mount("strict-b", affinity="strict")
        auto_c = self.stack.mount("auto-c", affinity="auto")
        session = "affinity-modes"
        os.mkdir(strict_a.session(session))  # the creator owns it
        harness.write_bytes(os.path.join(strict_a.session(session), "cookies.txt"), b"one\n",
                            fsync=True)
        for m in (strict_b, auto_c):
            path = os.path.join(m.session(session), "cookies.txt")
            harness.poll(lambda: harness.read_bytes(path) == b"one\n", DEADLINE,
                         what=f"{m.name} to read the session")
            self.assertErrno(errno.EROFS, harness.write_bytes, path, b"two\n",
                             what=f"write on non-owner {m.name}")
            self.assertErrno(errno.EROFS, harness.write_bytes,
                             os.path.join(m.session(session), "new.txt"), b"x",
                             what=f"create on non-owner {m.name}")
        # The owner gives it up: auto claims on first write, strict still may not.
        res = af.shim(self.stack, "release", session, control=af.control_socket(strict_a))
        self.assertEqual(res.returncode, 0, res.stderr)
        harness.poll(lambda: af.shim(self.stack, "--json", "status", session,
                                     control=af.control_socket(strict_b)).stdout.find(
                                         '"owner":""') >= 0, DEADLINE,
                     what="B to learn the release")
        self.assertErrno(errno.EROFS, harness.write_bytes,
                         os.path.join(strict_b.session(session), "cookies.txt"), b"b\n",
                         what="strict write to an unowned session")
        harness.poll(lambda: json.loads(af.shim(self.stack, "--json", "status", session,
                                                control=af.control_socket(auto_c)).stdout)
                     ["owner"] == "", DEADLINE, what="C to learn the release")
        harness.write_bytes(os.path.join(auto_c.session(session), "cookies.txt"), b"claimed\n",
                            fsync=True)
        st = json.loads(af.shim(self.stack, "--json", "status", session,
                                control=af.control_socket(auto_c)).stdout)
        self.assertTrue(st["owned"] and st["writable"], st)
        path_a = os.path.join(strict_a.session(session), "cookies.txt")
        harness.poll(lambda: harness.read_bytes(path_a) == b"claimed\n", DEADLINE,
                     what="the old owner to see the claimer's write")
        self.assertErrno(errno.EROFS, harness.write_bytes, path_a, b"a again\n",
                         what="write by the old owner after another host claimed")


class ForcedMove(harness.StackTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.proxy = af.PausableProxy(cls.stack.storage_port)
        cls.cut = af.proxied_mount(cls.stack, "cut", cls.proxy)
        cls.b = cls.stack.mount("host-b")

    @classmethod
    def tearDownClass(cls):
        cls.proxy.resume()
        super().tearDownClass()
        cls.proxy.close()

    def test_late_commits_are_fenced_and_quarantined(self):
        session = "forced"
        af.assign(self.stack, session, self.cut.engine_id)
        res = af.shim(self.stack, "--timeout", "20s", "wait-ready", session,
                      control=af.control_socket(self.cut))
        self.assertEqual(res.returncode, 0, res.stderr)
        jar_a = os.path.join(self.cut.session(session), "cookies.txt")
        harness.write_bytes(jar_a, b"before-the-cut\n", fsync=True)
        self.proxy.pause()
        try:
            started = time.monotonic()
            res = af.assign(self.stack, session, self.b.engine_id, grace="1500ms")
            reply = af.json_reply(res)
            self.assertFalse(reply["drained"], reply)
            self.assertTrue(reply["ready"], reply)
            self.assertGreaterEqual(time.monotonic() - started, 1.4, "grace period not waited")
            jar_b = os.path.join(self.b.session(session), "cookies.txt")
            self.assertEqual(harness.read_bytes(jar_b), b"before-the-cut\n")
            harness.write_bytes(jar_b, b"written-by-b\n", fsync=True)
            # The cut-off host still believes it owns the session and keeps writing.
            harness.write_bytes(jar_a, b"late-write-by-a\n")
            time.sleep(0.5)
        finally:
            self.proxy.resume()
        quarantine = os.path.join(self.cut.cache_dir, "quarantine")

        def quarantined():
            for d in glob.glob(os.path.join(quarantine, f"{session}.*")):
                p = os.path.join(d, "files", "cookies.txt")
                if os.path.exists(p) and harness.read_bytes(p) == b"late-write-by-a\n":
                    return d
            return None

        qdir = harness.poll(quarantined, 60, what="A's late write to land in its quarantine")
        with open(os.path.join(qdir, "reason")) as f:
            self.assertIn("STALE_EPOCH", f.read())
        with open(self.cut.log_path) as f:
            log = f.read()
        self.assertIn("commit fenced off (STALE_EPOCH)", log)
        self.assertNotIn("late-write-by-a", log)  # never cookie contents
        # B's data is untouched, everywhere.
        self.assertEqual(harness.read_bytes(jar_b), b"written-by-b\n")
        fresh = self.stack.mount("fresh")
        self.assertEqual(
            harness.read_bytes(os.path.join(fresh.session(session), "cookies.txt")),
            b"written-by-b\n")
        harness.poll(lambda: harness.read_bytes(jar_a) == b"written-by-b\n", DEADLINE,
                     what="A to converge on B's data")
        self.assertErrno(errno.EROFS, harness.write_bytes, jar_a, b"again\n",
                         what="write on A after it learned it lost the session")

    def test_concurrent_assigns_one_wins(self):
        session = "contended"
        af.assign(self.stack, session, self.cut.engine_id)
        res = af.shim(self.stack, "--timeout", "20s", "wait-ready", session,
                      control=af.control_socket(self.cut))
        self.assertEqual(res.returncode, 0, res.stderr)
        self.proxy.pause()  # the owner cannot drain: the winning assign waits its grace
        try:
            with concurrent.futures.ThreadPoolExecutor(6) as pool:
                results = list(pool.map(
                    lambda _: af.assign(self.stack, session, self.b.engine_id, grace="3s",
                                        check=False), range(6)))
        finally:
            self.proxy.resume()
        codes = sorted(r.returncode for r in results)
        self.assertEqual(codes, [0, 3, 3, 3, 3, 3], [(r.returncode, r.stderr) for r in results])
        for r in results:
            if r.returncode == 3:
                self.assertIn("conflict", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
