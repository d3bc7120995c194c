"""Every acknowledged write stored, or refused at the syscall: the mount
takes the storage service's limits from its HelloReply (8 MiB per file,
24 MiB and 1,000 files per session by default) even when its own are
looser, and refuses at the write, truncate or create that would break them
(EFBIG, EDQUOT) instead of accepting data whose commits the service then
refuses forever. A full cache dir is ENOSPC, not EIO. After each refusal the
session still commits: a small cookie file is fsync'ed and seen elsewhere.

With the kernel's writeback cache a write() lands in the page cache and the
mount sees it only at the write-back: the refusal then comes from fsync() or
close() (the kernel reports write-back errors other than ENOSPC as EIO at
close); truncate and create are refused at the syscall in both modes.
"""

import contextlib
import errno
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

MiB = 1 << 20
SERVICE_FILE = 8 * MiB  # the storage service's defaults
SERVICE_SESSION = 24 * MiB
SERVICE_FILES = 1000


def write_fsync(path, data):
    """Writes, fsyncs and closes; the first error (of any of the three) raises."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    closed = False
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        closed = True
        os.close(fd)
    finally:
        if not closed:
            with contextlib.suppress(OSError):
                os.close(fd)


class Limits(harness.StackTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # Looser than the service on purpose: the service's limits must win.
        cls.m = cls.stack.mount("limits", **{"limits-max-file-bytes": 64 * MiB,
                                             "limits-max-session-bytes": 256 * MiB,
                                             "limits-max-files-per-session": 100000})
        harness.poll(lambda: f"max_file_bytes: {SERVICE_FILE}" in cls.m.status_text(),
                     harness.START_TIMEOUT, what="the service's limits in .cookiefs/")
        cls.other = cls.stack.mount("reader")

    def over(self, expected):
        # Write-through refuses the write itself; writeback refuses the
        # write-back, which fsync reports (or close, as EIO).
        return (expected, errno.EIO) if harness.WRITEBACK else (expected,)

    def assert_cookie_commits(self, session):
        """A small cookie file in `session` commits: fsync returns 0 and a
        fresh mount sees it."""
        cookie = os.path.join(self.m.session(session), "cookies.txt")
        body = f"cookie of {session}\n".encode()
        write_fsync(cookie, body)
        there = os.path.join(self.other.session(session), "cookies.txt")
        harness.poll(lambda: harness.read_bytes(there) == body, harness.PROPAGATION_DEADLINE,
                     what=f"the cookie file of {session} on another mount")

    def test_status_shows_the_service_limits(self):
        status = self.m.status_text()
        self.assertIn(f"max_session_bytes: {SERVICE_SESSION}", status)
        self.assertIn(f"max_files_per_session: {SERVICE_FILES}", status)

    def test_file_past_the_limit_is_efbig(self):
        top = self.m.session("big")
        os.mkdir(top)
        big = os.path.join(top, "big.bin")
        self.assertErrno(self.over(errno.EFBIG), write_fsync, big, b"b" * (10 * MiB),
                         what="writing a 10 MiB file (service limit 8 MiB)")
        if not harness.WRITEBACK:
            self.assertEqual(os.path.getsize(big), SERVICE_FILE, "the write stopped at the limit")
        # A sparse file counts at its size, not its blocks.
        sparse = os.path.join(top, "sparse.bin")
        harness.write_bytes(sparse, b"")
        fd = os.open(sparse, os.O_WRONLY)
        try:
            self.assertErrno(errno.EFBIG, os.ftruncate, fd, 15 * MiB,
                             what="ftruncate to a 15 MiB sparse file")
        finally:
            os.close(fd)
        self.assertErrno(errno.EFBIG, os.truncate, sparse, SERVICE_FILE + 1,
                         what="truncate one byte past the limit")
        os.truncate(sparse, SERVICE_FILE)  # at the limit: fine
        self.assert_cookie_commits("big")
        there = self.other.session("big")
        self.assertLessEqual(os.path.getsize(os.path.join(there, "big.bin")), SERVICE_FILE)
        self.assertEqual(os.path.getsize(os.path.join(there, "sparse.bin")), SERVICE_FILE)

    def test_file_past_the_count_is_edquot(self):
        top = self.m.session("many")
        os.mkdir(top)
        os.mkdir(os.path.join(top, "dir"))  # directories count too
        for n in range(SERVICE_FILES - 1):
            os.close(os.open(os.path.join(top, "dir", f"f{n}"), os.O_CREAT | os.O_WRONLY, 0o600))
        extra = os.path.join(top, "one-too-many")
        self.assertErrno(errno.EDQUOT, os.open, extra, os.O_CREAT | os.O_WRONLY, 0o600,
                         what="creating the 1,001st file")
        self.assertErrno(errno.EDQUOT, os.mkdir, extra, what="mkdir as the 1,001st entry")
        self.assertErrno(errno.EDQUOT, os.symlink, "dir", extra,
                         what="symlink as the 1,001st entry")
        os.unlink(os.path.join(top, "dir", "f0"))  # room for one
        self.assert_cookie_commits("many")
        self.assertErrno(errno.EDQUOT, os.open, extra, os.O_CREAT | os.O_WRONLY, 0o600,
                         what="creating a file past the limit again")
        self.assertEqual(len(os.listdir(os.path.join(self.other.session("many"), "dir"))),
                         SERVICE_FILES - 2)

    def test_session_past_the_limit_is_edquot(self):
        top = self.m.session("full")
        os.mkdir(top)
        for n in range(3):  # 3 x 8 MiB (sparse) = 24 MiB: exactly the limit
            path = os.path.join(top, f"part{n}")
            harness.write_bytes(path, b"")
            os.truncate(path, SERVICE_FILE)
        more = os.path.join(top, "more")
        harness.write_bytes(more, b"")
        self.assertErrno(errno.EDQUOT, os.truncate, more, 1, what="truncate past the session")
        self.assertErrno(self.over(errno.EDQUOT), write_fsync, more, b"m",
                         what="writing one byte past the session limit")
        os.unlink(os.path.join(top, "part0"))
        self.assert_cookie_commits("full")


def run(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def fill(directory, make):
    """Calls make(directory, n) for n = 0, 1, ... until it raises ENOSPC."""
    os.makedirs(directory, exist_ok=True)
    n = 0
    while True:
        try:
            make(directory, n)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                return n
            raise
        n += 1


class FullCacheDir(harness.StackTestCase):
    """The cache dir on a small tmpfs, filled from outside the mount."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.m = cls.stack.mount("tiny", start=False)
        # Few inodes too: on tmpfs only those make mkdir and create fail.
        run("mount", "-t", "tmpfs", "-o", "size=8m,nr_inodes=512,mode=0700", "cookiefs-test",
            cls.m.cache_dir)
        cls.addClassCleanup(run, "umount", "-l", cls.m.cache_dir)
        cls.m.start()
        cls.other = cls.stack.mount("reader")

    def setUp(self):
        self.filler = os.path.join(self.m.cache_dir, "filler")
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", self.filler], check=False))

    def test_full_cache_dir_is_enospc(self):
        top = self.m.session("cramped")
        os.mkdir(top)
        jar = os.path.join(top, "jar")
        write_fsync(jar, b"before\n")
        # No inodes left: mkdir and create (and a new session) fail with ENOSPC.
        fill(self.filler, lambda d, n: os.close(os.open(os.path.join(d, str(n)),
                                                        os.O_CREAT | os.O_WRONLY, 0o600)))
        self.assertErrno(errno.ENOSPC, os.mkdir, os.path.join(top, "dir"),
                         what="mkdir in a session, cache dir out of inodes")
        self.assertErrno(errno.ENOSPC, os.open, os.path.join(top, "new"),
                         os.O_CREAT | os.O_WRONLY, 0o600,
                         what="create in a session, cache dir out of inodes")
        self.assertErrno(errno.ENOSPC, os.mkdir, self.m.session("another"),
                         what="mkdir of a new session, cache dir out of inodes")
        run("rm", "-rf", self.filler)
        # No blocks left: writes fail with ENOSPC.
        fill(self.filler, lambda d, n: write_fsync(os.path.join(d, str(n)), b"z" * MiB))
        fill(self.filler, lambda d, n: write_fsync(os.path.join(d, f"s{n}"), b"z" * 4096))
        self.assertErrno(errno.ENOSPC, write_fsync, jar, b"x" * (64 * 1024),
                         what="writing a file, cache dir out of space")
        run("rm", "-rf", self.filler)
        # Room again: the session commits as before.
        write_fsync(jar, b"after\n")
        os.mkdir(os.path.join(top, "dir"))
        there = os.path.join(self.other.session("cramped"), "jar")
        harness.poll(lambda: harness.read_bytes(there) == b"after\n",
                     harness.PROPAGATION_DEADLINE, what="the session on another mount")


if __name__ == "__main__":
    unittest.main(verbosity=2)
