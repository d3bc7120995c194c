"""SQLite and text jars written the way the engines write them, each
verified through a second mount on a fresh cache dir (the user-visible
property: the session restored elsewhere from PostgreSQL).

- libsoup: synchronous=OFF, rollback journal, replace = DELETE + INSERT
- Chromium: journal_mode=TRUNCATE, synchronous=FULL, mmap reads
- WAL mode
- text jar: rewrite in place (O_TRUNC) and append (O_APPEND)
- write to a temp file, then rename over the jar
"""

import mmap
import os
import sqlite3
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import workloads  # noqa: E402


class EnginePatterns(harness.StackTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.writer = cls.stack.mount("writer")

    def new_session(self, session):
        path = self.writer.session(session)
        os.mkdir(path)
        return path

    def restored_state(self, mount, session, fname, table):
        """Integrity and content of the session's db as restored on `mount`
        (checked on a local copy: the restored files may hold a hot journal
        or WAL that the read-only view could not recover)."""
        copy = harness.stable_copy(mount.session(session),
                                   os.path.join(self.stack.scratch("restore"), session))
        db = os.path.join(copy, fname)
        return workloads.integrity(db), workloads.read_state(db, table)

    def check_pattern(self, pattern, fname, txns):
        session = f"sqlite-{pattern}"
        writer_cls, make_history = workloads.WRITERS[pattern]
        history = make_history(42)[:txns]
        db = os.path.join(self.new_session(session), fname)
        expected = workloads.run_sqlite(pattern, db, history)
        self.assertEqual(workloads.read_state(db, writer_cls.table), expected,
                         "the writer's own mount does not read back what it wrote")

        fresh = self.stack.mount()
        harness.poll(lambda: self.restored_state(fresh, session, fname, writer_cls.table) ==
                     ("ok", expected), harness.PROPAGATION_DEADLINE,
                     what=f"{pattern}: a fresh mount to restore the db after {len(history)} txns")
        return fresh, session, expected

    def test_libsoup_pattern(self):
        fresh, session, expected = self.check_pattern("soup", "cookies.sqlite", 600)
        # Read directly on the fresh mount too (no journal left: read-only open works).
        db = os.path.join(fresh.session(session), "cookies.sqlite")
        self.assertEqual(workloads.read_state(db, "moz_cookies", readonly=True), expected)

    def test_chromium_pattern_with_mmap_reads(self):
        fresh, session, expected = self.check_pattern("chromium", "Cookies", 150)
        db = os.path.join(fresh.session(session), "Cookies")
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
        try:
            conn.execute("PRAGMA mmap_size = 268435456")
            self.assertEqual(conn.execute("PRAGMA integrity_check").fetchall(), [("ok",)])
            self.assertEqual(dict(conn.execute("SELECT name, value FROM cookies")), expected)
        finally:
            conn.close()
        # A read-only shared mapping of the db is what Chromium makes; it must
        # show the same bytes as read().
        with open(db, "rb") as f:
            data = f.read()
            with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ, flags=mmap.MAP_SHARED) as m:
                self.assertEqual(m[:], data)

    def test_wal_mode(self):
        self.check_pattern("wal", "cookies.sqlite", 300)

    def test_text_jar_rewrite_and_append(self):
        session = "text-jar"
        jar = os.path.join(self.new_session(session), "cookies.txt")
        expected = workloads.run_text_jar(jar, seed=9, rounds=40)
        self.assertEqual(harness.read_bytes(jar), expected)
        fresh = self.stack.mount()
        restored = os.path.join(fresh.session(session), "cookies.txt")
        harness.poll(lambda: harness.read_bytes(restored) == expected,
                     harness.PROPAGATION_DEADLINE,
                     what="a fresh mount to read the text jar's final bytes")

    def test_write_temp_then_rename(self):
        session = "rename-jar"
        jar = os.path.join(self.new_session(session), "cookies.txt")
        state = {}
        for i in range(25):
            state[f"r{i}"] = f"value-{i}" * (i + 1)
            if i % 4 == 3:
                del state[f"r{i - 2}"]
            workloads.text_replace_by_rename(jar, state, fsync=(i % 5 == 0))
        expected = workloads.text_jar_bytes(state)
        self.assertEqual(harness.read_bytes(jar), expected)
        self.assertEqual(os.listdir(os.path.dirname(jar)), ["cookies.txt"])
        fresh = self.stack.mount()
        restored_dir = fresh.session(session)
        harness.poll(lambda: harness.read_bytes(os.path.join(restored_dir, "cookies.txt")) ==
                     expected, harness.PROPAGATION_DEADLINE,
                     what="a fresh mount to read the renamed jar")
        self.assertEqual(sorted(os.listdir(restored_dir)), ["cookies.txt"],
                         "the temp file survived the rename on the fresh mount")


if __name__ == "__main__":
    unittest.main(verbosity=2)
