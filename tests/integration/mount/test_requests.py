"""What the kernel asks the mount for, counted by the mount's own
cookiefs_fuse_requests_total, on a write-through and a writeback mount:

- a chown costs one SETATTR and no GETATTR: the mount handles the killing of
  set-id bits itself (FUSE_HANDLE_KILLPRIV, which libfuse 3.14 leaves out of
  its INIT reply and cookiefs adds; see cookiefs/init_reply.hpp). SQLite
  chowns its journal in every transaction when it runs as root;
- that is safe because a file of the mount never has a set-id bit: setting
  one is refused with EPERM and the mode stays as it was.
"""

import os
import re
import sys
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


class Requests(harness.StackTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ports = {}
        cls.mounts = {}
        for name, writeback in (("through", False), ("writeback", True)):
            port = harness.free_port()
            cls.ports[name] = port
            options = {"metrics-listen": f"127.0.0.1:{port}"}
            if writeback:
                options["fuse-writeback-cache"] = True
            cls.mounts[name] = cls.stack.mount(name, **options)

    def requests(self, name):
        url = f"http://127.0.0.1:{self.ports[name]}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        counts = {op: float(v) for op, v in
                  re.findall(r'^cookiefs_fuse_requests_total\{op="(\w+)"\} (\S+)$', text, re.M)}
        self.assertTrue(counts, "the mount exports no cookiefs_fuse_requests_total")
        return counts

    def test_chown_sends_no_getattr(self):
        for name, m in self.mounts.items():
            with self.subTest(mount=name):
                d = m.session(f"chown-{name}")
                os.mkdir(d)
                fd = os.open(os.path.join(d, "cookies.sqlite-journal"),
                             os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    os.write(fd, b"journal")
                    os.fchown(fd, os.getuid(), os.getgid())  # warm-up (security xattr probe)
                    before = self.requests(name)
                    for _ in range(5):
                        os.fchown(fd, os.getuid(), os.getgid())
                    after = self.requests(name)
                finally:
                    os.close(fd)
                delta = {op: after.get(op, 0) - before.get(op, 0) for op in after}
                # The mount counts a request when it arrives, so every request
                # a returned syscall caused is counted already (it used to be
                # counted after its reply: 4 of 5 seen, one run in a few).
                # >= : a writeback mount's kernel may add a SETATTR of its
                # own at any time (the dirty inode's times written back).
                self.assertGreaterEqual(delta.get("setattr", 0), 5, delta)
                self.assertEqual(delta.get("getattr", 0), 0,
                                 f"a chown asked for the attributes first: {delta}")

    @staticmethod
    def gauge(port, metric):
        url = f"http://127.0.0.1:{port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        found = re.findall(rf'^{metric} (\S+)$', text, re.M)
        if not found:
            raise AssertionError(f"the mount exports no {metric}")
        return float(found[0])

    def test_gauges_are_true_right_after_a_commit(self):
        # Computed when scraped (no sampling period): once an fsync returned,
        # nothing of the session is dirty. A mount of its own, holding only
        # this session: no other session's commit can be in flight.
        for writeback in (False, True):
            with self.subTest(writeback=writeback):
                port = harness.free_port()
                options = {"metrics-listen": f"127.0.0.1:{port}"}
                if writeback:
                    options["fuse-writeback-cache"] = True
                m = self.stack.mount(f"gauges-{int(writeback)}", **options)
                try:
                    d = m.session(f"gauges-{int(writeback)}")
                    os.mkdir(d)
                    jar = os.path.join(d, "cookies.txt")
                    harness.write_bytes(jar, b"x" * 5000)
                    self.assertEqual(self.gauge(port, "cookiefs_sessions_held"), 1)
                    harness.fsync_path(jar)
                    self.assertEqual(self.gauge(port, "cookiefs_dirty_bytes"), 0)
                finally:
                    m.stop()

    def test_set_id_bits_are_refused(self):
        for name, m in self.mounts.items():
            with self.subTest(mount=name):
                d = m.session(f"setid-{name}")
                os.mkdir(d)
                path = os.path.join(d, "cookies.txt")
                with open(path, "w") as f:
                    f.write("x\n")
                os.chmod(path, 0o755)
                for bits in (0o4755, 0o2755):
                    with self.assertRaises(PermissionError):
                        os.chmod(path, bits)
                    self.assertEqual(os.stat(path).st_mode & 0o7777, 0o755)


if __name__ == "__main__":
    unittest.main(verbosity=2)
