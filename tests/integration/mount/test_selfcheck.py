"""Checks the test logic itself without any mount: the workloads, the
libsoup fixture and the crash checker run against a local directory, where
they must all pass; and the crash checker must reject damaged databases.
So a failure of the mount tests is the mount's, not the harness's.
"""

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crash_writer  # noqa: E402
import soup_jar  # noqa: E402
import workloads  # noqa: E402

PYTHON = sys.executable
HERE = os.path.dirname(os.path.abspath(__file__))


class WorkloadSelfCheck(unittest.TestCase):
    def setUp(self):
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.dir = tempfile.mkdtemp(prefix="cookiefs-selfcheck-", dir=base)

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def test_sqlite_patterns_replay_to_their_final_state(self):
        for pattern in ("soup", "chromium", "wal"):
            with self.subTest(pattern=pattern):
                writer_cls, make_history = workloads.WRITERS[pattern]
                history = make_history(7)[:300]
                db = os.path.join(self.dir, f"{pattern}.sqlite")
                expected = workloads.run_sqlite(pattern, db, history)
                self.assertEqual(workloads.integrity(db), "ok")
                self.assertEqual(workloads.read_state(db, writer_cls.table), expected)
                self.assertEqual(workloads.matching_prefix(history, expected, 0, len(history)),
                                 len(history))

    def test_text_jar_bytes_are_predicted(self):
        jar = os.path.join(self.dir, "cookies.txt")
        expected = workloads.run_text_jar(jar, seed=3)
        with open(jar, "rb") as f:
            self.assertEqual(f.read(), expected)
        state = {"a": "1", "b": "2"}
        workloads.text_replace_by_rename(jar, state, fsync=True)
        with open(jar, "rb") as f:
            self.assertEqual(f.read(), workloads.text_jar_bytes(state))
        self.assertFalse(os.path.exists(jar + ".tmp"))

    def test_soup_fixture_round_trip(self):
        for kind in ("db", "text"):
            with self.subTest(kind=kind):
                path = os.path.join(self.dir, "cookies." + ("sqlite" if kind == "db" else "txt"))
                expected = soup_jar.exercise(kind, path)
                self.assertEqual(soup_jar.read(kind, path), expected)
                if kind == "db":
                    self.assertEqual(workloads.integrity(path), "ok")

    def test_crash_checker_accepts_killed_writers(self):
        rng = random.Random(11)
        for trial, pattern in enumerate(["soup", "chromium"] * 3):
            with self.subTest(trial=trial, pattern=pattern):
                db = os.path.join(self.dir, f"t{trial}.sqlite")
                side = os.path.join(self.dir, f"t{trial}.side")
                proc = subprocess.Popen([PYTHON, os.path.join(HERE, "crash_writer.py"), pattern,
                                         db, side, str(trial)])
                time.sleep(rng.uniform(0.1, 0.4))
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                begun, _acked = crash_writer.parse_side_channel(side)
                self.assertGreater(begun, 0, "writer did not start within 0.4 s")
                problem, k = crash_writer.verify_restored(pattern, trial, db, side, durable=True)
                self.assertIsNone(problem)
                self.assertGreaterEqual(k, 1)

    def test_crash_checker_rejects_damage(self):
        db = os.path.join(self.dir, "c.sqlite")
        side = os.path.join(self.dir, "c.side")
        subprocess.run([PYTHON, "-c", "import sys; sys.argv=['w','chromium',%r,%r,'5'];"
                        "import runpy; runpy.run_path(%r, run_name='__main__')" %
                        (db, side, os.path.join(HERE, "crash_writer.py"))], timeout=600,
                       check=False)
        problem, _ = crash_writer.verify_restored("chromium", 5, db, side, durable=True)
        self.assertIsNone(problem)
        # Lost acknowledged transactions: roll the db back to an earlier state.
        writer_cls, make_history = workloads.WRITERS["chromium"]
        old = os.path.join(self.dir, "old.sqlite")
        workloads.run_sqlite("chromium", old, make_history(5)[:50])
        problem, _ = crash_writer.verify_restored("chromium", 5, old, side, durable=True)
        self.assertIn("not a state after", problem)
        # Torn pages: b-tree page headers and cell pointers overwritten.
        with open(db, "r+b") as f:
            for page in range(2, 8):
                f.seek(4096 * page)
                f.write(b"\x0d\xff\xff" * 30)
        problem, _ = crash_writer.verify_restored("chromium", 5, db, side, durable=True)
        self.assertIsNotNone(problem)


if __name__ == "__main__":
    unittest.main(verbosity=2)
