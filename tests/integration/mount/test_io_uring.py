"""FUSE over io_uring (fuse.io_uring: true, with the writeback cache): a
libsoup-pattern SQLite jar and a text jar written through the mount are
served by the rings (the mount's cookiefs_fuse_io_uring_requests_total
grows by at least one request per transaction), and the session restored on
a classic mount from PostgreSQL holds every transaction.

Skipped, with the reason, on a kernel without the transport (before Linux
6.14, or built without CONFIG_FUSE_IO_URING). The jar suites also run on
rings: the *.io_uring ctest entries (tests/integration/mount/CMakeLists.txt).
"""

import os
import re
import sqlite3
import sys
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

ENABLE_PARAM = "/sys/module/fuse/parameters/enable_uring"
ROWS = 150


def unavailable_reason():
    if not os.path.exists(ENABLE_PARAM):
        return f"this kernel has no FUSE over io_uring ({ENABLE_PARAM} is missing)"
    if os.geteuid() != 0:
        with open(ENABLE_PARAM) as f:
            if f.read().strip() != "Y":
                return "fuse.enable_uring is off and only root may switch it on"
    return None


class IoUring(harness.StackTestCase):
    @classmethod
    def setUpClass(cls):
        reason = unavailable_reason()
        if reason:
            raise unittest.SkipTest(reason)
        super().setUpClass()
        cls.metrics_port = harness.free_port()
        cls.writer = cls.stack.mount(
            "writer", **{"fuse-io-uring": True, "fuse-writeback-cache": True,
                         "metrics-listen": f"127.0.0.1:{cls.metrics_port}"})
        cls.reader = cls.stack.mount("reader")

    def ring_requests(self):
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        m = re.search(r"^cookiefs_fuse_io_uring_requests_total (\S+)$", text, re.M)
        self.assertIsNotNone(m, "the mount exports no cookiefs_fuse_io_uring_requests_total")
        return float(m.group(1))

    def test_jars_are_served_by_the_rings_and_reach_postgresql(self):
        before = self.ring_requests()
        sid = "uring-jars"
        path = self.writer.session(sid)
        os.mkdir(path)
        db = sqlite3.connect(os.path.join(path, "cookies.sqlite"), isolation_level=None)
        db.execute("PRAGMA synchronous=OFF")
        db.execute("CREATE TABLE moz_cookies (id INTEGER PRIMARY KEY, name TEXT, value TEXT)")
        for i in range(ROWS):  # autocommit: one rollback-journal transaction each
            db.execute("DELETE FROM moz_cookies WHERE name = ?", (f"c{i % 40}",))
            db.execute("INSERT INTO moz_cookies (name, value) VALUES (?, ?)",
                       (f"c{i % 40}", f"v{i}"))
        db.close()
        with open(os.path.join(path, "cookies.txt"), "a") as f:
            for i in range(ROWS):
                f.write(f".example.com\tTRUE\t/\tFALSE\t0\tt{i}\tv{i}\n")
                f.flush()
        harness.fsync_path(os.path.join(path, "cookies.sqlite"))
        harness.fsync_path(os.path.join(path, "cookies.txt"))
        # The gauge is published once a second.
        harness.poll(lambda: self.ring_requests() - before >= 2 * ROWS, 10,
                     what="ring-served requests to reach one per transaction")

        restored = self.reader.session(sid)
        copy = harness.stable_copy(restored, os.path.join(self.stack.scratch("restore"), sid))
        check = sqlite3.connect(os.path.join(copy, "cookies.sqlite"))
        self.assertEqual(check.execute("PRAGMA integrity_check").fetchone()[0], "ok")
        self.assertEqual(check.execute("SELECT count(*) FROM moz_cookies").fetchone()[0], 40)
        last = max(i for i in range(ROWS) if i % 40 == 29)
        self.assertEqual(check.execute("SELECT value FROM moz_cookies WHERE name = 'c29'")
                         .fetchone()[0], f"v{last}")
        check.close()
        with open(os.path.join(copy, "cookies.txt")) as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), ROWS)
        self.assertTrue(lines[-1].endswith(f"t{ROWS - 1}\tv{ROWS - 1}"))

    def test_stop_reports_the_ring_count(self):
        # A SIGTERM stop with rings running ends cleanly (the queue threads
        # and the classic readers are woken) and says how much they served.
        m = self.stack.mount("stopper", **{"fuse-io-uring": True, "fuse-writeback-cache": True})
        sid = "uring-stop"
        os.mkdir(m.session(sid))
        harness.write_bytes(os.path.join(m.session(sid), "jar"), b"x" * 5000, fsync=True)
        self.assertEqual(m.stop(), 0)
        with open(m.log_path) as f:
            log = f.read()
        served = re.findall(r"fuse io_uring: (\d+) requests served through the rings", log)
        self.assertTrue(served, f"no ring summary in the log:\n{harness.tail(m.log_path, 20)}")
        self.assertGreater(int(served[-1]), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
