"""POSIX behaviour programs notice (pjdfstest open/02, mkdir, unlink/14):
new files and directories get exactly the mode the caller asked for under
its own umask (the daemon's umask is not applied on top), and a file that
is still open after unlink reports st_nlink 0.
"""

import contextlib
import os
import stat
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


@contextlib.contextmanager
def umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode_of(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


class Posix(harness.StackTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.m = cls.stack.mount("posix")

    def test_modes_are_the_callers(self):
        top = self.m.session("modes")
        os.mkdir(top)
        # (umask, creat mode, mkdir mode) -> expected file mode, dir mode.
        cases = [(0o002, 0o666, 0o777, 0o664, 0o775),
                 (0o027, 0o666, 0o777, 0o640, 0o750),
                 (0o000, 0o666, 0o777, 0o666, 0o777),
                 (0o022, 0o644, 0o755, 0o644, 0o755)]
        for n, (mask, fmode, dmode, fwant, dwant) in enumerate(cases):
            with umask(mask):
                fd = os.open(os.path.join(top, f"f{n}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY,
                             fmode)
                os.write(fd, b"x")
                os.close(fd)
                os.mkdir(os.path.join(top, f"d{n}"), dmode)
            self.assertEqual(oct(mode_of(os.path.join(top, f"f{n}"))), oct(fwant),
                             f"creat({oct(fmode)}) under umask {oct(mask)}")
            self.assertEqual(oct(mode_of(os.path.join(top, f"d{n}"))), oct(dwant),
                             f"mkdir({oct(dmode)}) under umask {oct(mask)}")
        # The modes are what was committed: another mount sees them too.
        harness.fsync_path(top)
        other = self.stack.mount()
        there = other.session("modes")
        harness.poll(lambda: os.path.isdir(os.path.join(there, "d3")),
                     harness.PROPAGATION_DEADLINE, what="the session on another mount")
        for n, (_mask, _f, _d, fwant, dwant) in enumerate(cases):
            self.assertEqual(oct(mode_of(os.path.join(there, f"f{n}"))), oct(fwant))
            self.assertEqual(oct(mode_of(os.path.join(there, f"d{n}"))), oct(dwant))
        other.stop()

    def test_unlinked_open_file_has_no_links(self):
        top = self.m.session("nlink")
        os.mkdir(top)
        for n in range(3):  # the first unlinks keep spares; all must say 0
            path = os.path.join(top, f"journal-{n}")
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                os.write(fd, b"journal")
                self.assertEqual(os.fstat(fd).st_nlink, 1)
                os.unlink(path)
                self.assertFalse(os.path.exists(path))
                self.assertEqual(os.fstat(fd).st_nlink, 0, "st_nlink of an unlinked open file")
                # Still usable until closed.
                self.assertEqual(os.pread(fd, 7, 0), b"journal")
            finally:
                os.close(fd)
        # A new file of the same name is a new file with one link.
        path = os.path.join(top, "journal-0")
        harness.write_bytes(path, b"again")
        self.assertEqual(os.stat(path).st_nlink, 1)
        self.assertEqual(harness.read_bytes(path), b"again")


if __name__ == "__main__":
    import unittest
    unittest.main(verbosity=2)
