"""Durability across a crash of the cookiefs process.

- fsync returns only after the session's snapshot is in PostgreSQL: kill -9
  the mount right after fsync returned, and a fresh mount elsewhere has the
  data at once (no waiting: it is already committed).
- Without fsync: kill -9 the mount before its commit delay expires; a
  restart on the same cache dir re-commits what was written, so a fresh
  mount elsewhere sees it.
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import workloads  # noqa: E402


class Durability(harness.StackTestCase):
    def test_fsync_then_kill9(self):
        a = self.stack.mount("fsync-writer")
        session = "dur-fsync"
        os.mkdir(a.session(session))
        jar = os.path.join(a.session(session), "cookies.txt")
        data = workloads.text_jar_bytes({f"n{i}": "v" * i for i in range(50)})
        harness.write_bytes(jar, data, fsync=True)
        # Chromium's pattern: every commit ends in fdatasync.
        history = workloads.batched_history(3)[:40]
        db = os.path.join(a.session(session), "Cookies")
        expected = workloads.run_sqlite("chromium", db, history)
        a.kill9()

        fresh = self.stack.mount()
        restored = fresh.session(session)
        self.assertEqual(harness.read_bytes(os.path.join(restored, "cookies.txt")), data,
                         "fsync returned, but the text jar is not in PostgreSQL")
        copy = harness.copy_session(restored, os.path.join(self.stack.scratch("dur"), session))
        self.assertEqual(workloads.integrity(os.path.join(copy, "Cookies")), "ok")
        self.assertEqual(workloads.read_state(os.path.join(copy, "Cookies"), "cookies"),
                         expected, "acknowledged (fdatasync'ed) transactions are missing")

    @unittest.skipIf(harness.WRITEBACK, "write-through only: with the writeback cache a tree "
                     "being written back when the daemon dies is reverted (test_crash covers it)")
    def test_kill9_without_fsync_then_restart_recommits(self):
        # Long delays: nothing may be committed before the kill.
        a = self.stack.mount("lazy-writer", **{"commit-delay": "30s", "commit-max-lag": "60s"})
        session = "dur-restart"
        os.mkdir(a.session(session))
        jar = os.path.join(a.session(session), "cookies.txt")
        expected_text = workloads.run_text_jar(jar, seed=5, rounds=20)
        history = workloads.soup_history(8)[:200]
        db = os.path.join(a.session(session), "cookies.sqlite")
        expected_db = workloads.run_sqlite("soup", db, history)
        a.kill9()

        a.start(**{"commit-delay": harness.COMMIT_DELAY,
                   "commit-max-lag": f"{int(harness.COMMIT_MAX_LAG_S * 1000)}ms"})
        # The restarted mount serves its cache.
        self.assertEqual(harness.read_bytes(jar), expected_text,
                         "restarted mount lost the text jar written before kill -9")
        self.assertEqual(workloads.read_state(db, "moz_cookies", readonly=True), expected_db,
                         "restarted mount lost db transactions written before kill -9")

        fresh = self.stack.mount()
        restored = fresh.session(session)
        harness.poll(lambda: harness.read_bytes(os.path.join(restored, "cookies.txt")) ==
                     expected_text, harness.PROPAGATION_DEADLINE,
                     what="the restart to re-commit the text jar (seen on a fresh mount)")

        def db_restored():
            copy = harness.stable_copy(restored,
                                       os.path.join(self.stack.scratch("dur"), session))
            db_copy = os.path.join(copy, "cookies.sqlite")
            return (workloads.integrity(db_copy) == "ok" and
                    workloads.read_state(db_copy, "moz_cookies") == expected_db)

        harness.poll(db_restored, harness.PROPAGATION_DEADLINE,
                     what="the restart to re-commit the db (seen on a fresh mount)")

    def test_rm_r_deletes_in_database(self):
        a = self.stack.mount("deleter")
        session = "dur-delete"
        os.makedirs(os.path.join(a.session(session), "Default"))
        harness.write_bytes(os.path.join(a.session(session), "Default", "Cookies"), b"x" * 100,
                            fsync=True)
        import shutil
        shutil.rmtree(a.session(session))
        self.assertNotIn(session, os.listdir(a.path))
        fresh = self.stack.mount()
        harness.poll(lambda: not os.path.exists(fresh.session(session)),
                     harness.PROPAGATION_DEADLINE,
                     what="rm -r of a session to delete it in the database")


if __name__ == "__main__":
    unittest.main(verbosity=2)
