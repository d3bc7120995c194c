"""Two hosts: mount B sees what mount A commits, within the maximum commit
lag and without polling on B's side (push + kernel cache invalidation). B
reads each file first so that the kernel caches its pages and attributes;
stale cached bytes on B are the failure this file looks for.

The test itself polls B with a deadline of ten times the maximum lag (plus
slack for a loaded CI machine): that is how long a user would wait.
"""

import errno
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

DEADLINE = harness.PROPAGATION_DEADLINE


class CrossHost(harness.StackTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.a = cls.stack.mount("host-a")
        cls.b = cls.stack.mount("host-b")

    def seed_session(self, session, files):
        """Creates the session on A with files, fsyncs, and has B read them all."""
        os.mkdir(self.a.session(session))
        for name, data in files.items():
            harness.write_bytes(os.path.join(self.a.session(session), name), data, fsync=True)
        for name, data in files.items():
            path = os.path.join(self.b.session(session), name)
            harness.poll(lambda: harness.read_bytes(path) == data, DEADLINE,
                         what=f"B to read {name} committed (fsync) on A")
            # Twice: the second read is served from B's kernel page cache.
            self.assertEqual(harness.read_bytes(path), data)

    def test_in_place_rewrite_same_size_same_mtime(self):
        old = b"A" * 8192 + b"old-cookie-value\n"
        new = b"B" * 8192 + b"new-cookie-value\n"
        self.seed_session("xh-rewrite", {"cookies.txt": old})
        path_a = os.path.join(self.a.session("xh-rewrite"), "cookies.txt")
        st = os.stat(path_a)
        fd = os.open(path_a, os.O_WRONLY)
        try:
            os.pwrite(fd, new, 0)  # same size, no truncate
        finally:
            os.close(fd)
        # Same mtime as before: B must not rely on size/mtime to notice.
        os.utime(path_a, ns=(st.st_atime_ns, st.st_mtime_ns))
        path_b = os.path.join(self.b.session("xh-rewrite"), "cookies.txt")
        harness.poll(lambda: harness.read_bytes(path_b) == new, DEADLINE,
                     what="B to see A's same-size in-place rewrite (stale page cache?)")

    def test_truncate_rewrite_and_append(self):
        self.seed_session("xh-text", {"cookies.txt": b"# HTTP Cookie File\nline1\n"})
        path_a = os.path.join(self.a.session("xh-text"), "cookies.txt")
        path_b = os.path.join(self.b.session("xh-text"), "cookies.txt")
        harness.write_bytes(path_a, b"# HTTP Cookie File\nrewritten\n")  # O_TRUNC
        harness.poll(lambda: harness.read_bytes(path_b) == b"# HTTP Cookie File\nrewritten\n",
                     DEADLINE, what="B to see A's O_TRUNC rewrite")
        harness.write_bytes(path_a, b"appended\n", flags=os.O_WRONLY | os.O_APPEND)
        harness.poll(lambda: harness.read_bytes(path_b) ==
                     b"# HTTP Cookie File\nrewritten\nappended\n", DEADLINE,
                     what="B to see A's O_APPEND (size grew; stale attributes?)")

    def test_new_file_rename_and_unlink(self):
        self.seed_session("xh-names", {"keep.txt": b"keep\n", "gone.txt": b"gone\n"})
        dir_a, dir_b = self.a.session("xh-names"), self.b.session("xh-names")
        # B looked up these names; also make it cache a negative lookup.
        self.assertFalse(os.path.exists(os.path.join(dir_b, "new.txt")))
        harness.write_bytes(os.path.join(dir_a, "new.tmp"), b"fresh\n")
        os.rename(os.path.join(dir_a, "new.tmp"), os.path.join(dir_a, "new.txt"))
        os.unlink(os.path.join(dir_a, "gone.txt"))
        harness.poll(lambda: sorted(os.listdir(dir_b)) == ["keep.txt", "new.txt"], DEADLINE,
                     what="B's listing to show A's rename and unlink")
        harness.poll(lambda: harness.read_bytes(os.path.join(dir_b, "new.txt")) == b"fresh\n",
                     DEADLINE, what="B to read the file A created (negative dentry cached?)")
        harness.poll(lambda: not os.path.exists(os.path.join(dir_b, "gone.txt")), DEADLINE,
                     what="B to stop finding the file A unlinked")

    def test_session_removed_everywhere(self):
        self.seed_session("xh-delete", {"cookies.txt": b"bye\n"})
        dir_a, dir_b = self.a.session("xh-delete"), self.b.session("xh-delete")
        os.unlink(os.path.join(dir_a, "cookies.txt"))
        os.rmdir(dir_a)
        self.assertFalse(os.path.exists(dir_a))
        harness.poll(lambda: not os.path.exists(dir_b), DEADLINE,
                     what="B to lose the session A removed")
        fresh = self.stack.mount()
        try:
            os.stat(fresh.session("xh-delete"))
            self.fail("a fresh mount still finds the removed session")
        except OSError as exc:
            self.assertEqual(exc.errno, errno.ENOENT, f"stat of removed session: {exc}")

    def test_sqlite_db_changes_are_seen_whole(self):
        import sqlite3
        session = "xh-sqlite"
        os.mkdir(self.a.session(session))
        db_a = os.path.join(self.a.session(session), "cookies.sqlite")
        conn = sqlite3.connect(db_a, isolation_level=None)
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE c(name TEXT PRIMARY KEY, value TEXT)")
        conn.execute("INSERT INTO c VALUES('a', ?)", ("1" * 3000,))
        db_b = os.path.join(self.b.session(session), "cookies.sqlite")

        def b_reads(expected):
            c = sqlite3.connect(f"file:{db_b}?mode=ro", uri=True)
            try:
                return dict(c.execute("SELECT name, value FROM c")) == expected
            finally:
                c.close()

        harness.poll(lambda: b_reads({"a": "1" * 3000}), DEADLINE, what="B to read the db")
        for i in range(2, 12):
            conn.execute("INSERT OR REPLACE INTO c VALUES('a', ?)", (str(i) * 3000,))
            conn.execute("INSERT INTO c VALUES(?, 'x')", (f"k{i}",))
        expected = {"a": "11" * 3000, **{f"k{i}": "x" for i in range(2, 12)}}
        conn.close()
        harness.poll(lambda: b_reads(expected), DEADLINE,
                     what="B to read A's last committed state of the db")


if __name__ == "__main__":
    unittest.main(verbosity=2)
