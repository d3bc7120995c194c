"""libsoup's own cookie jars (what WebKit/WPE and WebKitGTK use) on a mount:
add, replace and delete cookies in a SQLite jar and in a text jar; then a
fresh mount on an empty cache dir must load the same cookies, and the
database must pass PRAGMA integrity_check there.
"""

import os
import sqlite3
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import soup_jar  # noqa: E402


class LibsoupJars(harness.StackTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.writer = cls.stack.mount("writer")

    def exercise_and_restore(self, kind, session, fname):
        os.mkdir(self.writer.session(session))
        path = os.path.join(self.writer.session(session), fname)
        expected = soup_jar.exercise(kind, path)
        self.assertGreater(len(expected), 10)
        # The writer's own view, reopened.
        self.assertEqual(soup_jar.read(kind, path), expected)

        fresh = self.stack.mount()
        restored = os.path.join(fresh.session(session), fname)
        harness.poll(lambda: soup_jar.read(kind, restored) == expected,
                     harness.PROPAGATION_DEADLINE,
                     what=f"a fresh mount to load the {kind} jar's {len(expected)} cookies")
        return restored

    def test_sqlite_jar_moves_to_a_fresh_mount(self):
        restored = self.exercise_and_restore("db", "soup-db", "cookies.sqlite")
        conn = sqlite3.connect(f"file:{restored}?mode=ro", uri=True)
        try:
            self.assertEqual(conn.execute("PRAGMA integrity_check").fetchall(), [("ok",)])
        finally:
            conn.close()
        # No hot journal left behind in the committed snapshot.
        self.assertFalse(os.path.exists(restored + "-journal"))

    def test_text_jar_moves_to_a_fresh_mount(self):
        restored = self.exercise_and_restore("text", "soup-text", "cookies.txt")
        with open(restored, "rb") as f:
            data = f.read()
        self.assertTrue(data.endswith(b"\n"), "text jar ends mid-line")


if __name__ == "__main__":
    unittest.main(verbosity=2)
