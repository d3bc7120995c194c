"""The mount's documented errors and its behaviour at the edges:
invalid names (EINVAL / ENAMETOOLONG), over-limit file (EFBIG) and session
(EDQUOT), hard links and mknod (EPERM), unmounting with open files, a
storage service that is down when the mount starts, a missing or busy
mountpoint (exit 2), a restart after kill -9 on its own stale mount, and
--help / --version.
"""

import contextlib
import errno
import os
import signal
import stat
import subprocess
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

FILE_LIMIT = 64 * 1024
SESSION_LIMIT = 256 * 1024
BAD_NAME = (errno.EINVAL, errno.ENAMETOOLONG)
# Over-limit writes: write() fails write-through; close()/fsync() fails (EIO,
# the kernel's write-back error) with the writeback cache.
OVER_LIMIT_FILE = (errno.EFBIG, errno.EIO)
OVER_LIMIT_SESSION = (errno.EDQUOT, errno.EIO)


class Errors(harness.StackTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.m = cls.stack.mount("limited", **{"limits-max-file-bytes": FILE_LIMIT,
                                              "limits-max-session-bytes": SESSION_LIMIT})

    def session(self, name):
        path = self.m.session(name)
        os.mkdir(path)
        return path

    def test_invalid_session_names(self):
        self.assertErrno(errno.EINVAL, os.mkdir, os.path.join(self.m.path, "bad name"),
                         what="mkdir of a session id with a space")
        self.assertErrno(errno.EINVAL, os.mkdir, os.path.join(self.m.path, "semi;colon"),
                         what="mkdir of a session id with ';'")
        self.assertErrno(errno.EINVAL, os.mkdir, os.path.join(self.m.path, ".hidden"),
                         what="mkdir of a session id with a leading '.'")
        self.assertErrno(errno.ENAMETOOLONG, os.mkdir, os.path.join(self.m.path, "x" * 129),
                         what="mkdir of a 129-character session id")
        os.mkdir(os.path.join(self.m.path, "y" * 128))  # the longest valid id
        self.assertErrno((errno.EPERM, errno.EINVAL, errno.EACCES), harness.write_bytes,
                         os.path.join(self.m.path, "file-in-root"), b"x",
                         what="creating a regular file in the mount root")
        self.assertErrno((errno.EROFS, errno.EPERM, errno.EACCES), harness.write_bytes,
                         os.path.join(self.m.path, ".cookiefs", "new"), b"x",
                         what="creating a file in .cookiefs/")

    def test_invalid_paths_inside_a_session(self):
        top = self.session("names")
        deep = os.path.join(top, *"abcdefg")  # 7 components
        os.makedirs(deep)
        harness.write_bytes(os.path.join(deep, "h"), b"8 components is the limit")
        os.mkdir(os.path.join(deep, "h2"))
        self.assertErrno(BAD_NAME, harness.write_bytes, os.path.join(deep, "h2", "i"), b"x",
                         what="creating a file 9 components deep")
        self.assertErrno(BAD_NAME, os.mkdir, os.path.join(deep, "h2", "i"),
                         what="mkdir 9 components deep")
        long_dirs = os.path.join(top, *(c * 250 for c in "pqrs"))  # 1003 characters
        os.makedirs(long_dirs)
        self.assertErrno(BAD_NAME, harness.write_bytes, os.path.join(long_dirs, "z" * 30), b"x",
                         what="creating a file whose session path exceeds 1024 characters")

    def test_file_over_limit_is_efbig(self):
        top = self.session("file-limit")
        ok = os.path.join(top, "at-limit")
        harness.write_bytes(ok, b"a" * FILE_LIMIT)
        self.assertEqual(os.path.getsize(ok), FILE_LIMIT)
        big = os.path.join(top, "over-limit")
        # Write-through refuses the write() itself; with the kernel's writeback
        # cache (the default) the write-back is refused and close() fails.
        self.assertErrno(OVER_LIMIT_FILE, harness.write_bytes, big, b"b" * (FILE_LIMIT + 1),
                         what=f"writing {FILE_LIMIT + 1} bytes with max file {FILE_LIMIT}")
        self.assertErrno(errno.EFBIG, os.truncate, ok, FILE_LIMIT + 1,
                         what="truncate (grow) past the file limit")
        fd = os.open(ok, os.O_WRONLY)
        try:
            def pwrite_past_limit():
                os.pwrite(fd, b"c", FILE_LIMIT)
                os.fsync(fd)
            self.assertErrno(OVER_LIMIT_FILE, pwrite_past_limit,
                             what="pwrite one byte past the file limit")
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
        # Nothing over the limit was stored: another mount sees at most the limit.
        fresh = self.stack.mount()
        other = fresh.session("file-limit")
        harness.poll(lambda: os.path.exists(os.path.join(other, "at-limit")),
                     harness.PROPAGATION_DEADLINE, what="the session on a fresh mount")
        self.assertEqual(os.path.getsize(os.path.join(other, "at-limit")), FILE_LIMIT)
        with contextlib.suppress(FileNotFoundError):
            self.assertLessEqual(os.path.getsize(os.path.join(other, "over-limit")), FILE_LIMIT)

    def test_session_over_limit_is_edquot(self):
        top = self.session("session-limit")
        chunk = b"s" * 60000
        written = 0
        for i in range(SESSION_LIMIT // len(chunk)):
            harness.write_bytes(os.path.join(top, f"f{i}"), chunk)
            written += len(chunk)
        self.assertErrno(OVER_LIMIT_SESSION, harness.write_bytes, os.path.join(top, "one-more"),
                         chunk,
                         what=f"writing past the session limit ({written} + {len(chunk)} > "
                              f"{SESSION_LIMIT})")
        # Freeing space makes room again.
        os.unlink(os.path.join(top, "f0"))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(top, "one-more"))
        harness.write_bytes(os.path.join(top, "after-unlink"), chunk)

    def test_hard_links_and_mknod_are_eperm(self):
        top = self.session("special")
        target = os.path.join(top, "cookies.sqlite")
        harness.write_bytes(target, b"x")
        self.assertErrno(errno.EPERM, os.link, target, os.path.join(top, "hard"),
                         what="link()")
        self.assertErrno(errno.EPERM, os.mkfifo, os.path.join(top, "fifo"), what="mkfifo()")
        self.assertErrno(errno.EPERM, os.mknod, os.path.join(top, "chr"),
                         stat.S_IFCHR | 0o600, os.makedev(1, 3), what="mknod(S_IFCHR)")
        # Symlinks are allowed (Chromium's Default/Cookies may be one).
        os.symlink("cookies.sqlite", os.path.join(top, "link"))
        self.assertEqual(harness.read_bytes(os.path.join(top, "link")), b"x")

    def test_set_id_bits_are_refused_or_dropped(self):
        # The mount kills set-id bits for the kernel (FUSE_CAP_HANDLE_KILLPRIV)
        # by never having any: chmod refuses them, create drops them.
        top = self.session("setid")
        jar = os.path.join(top, "cookies.txt")
        harness.write_bytes(jar, b"x")
        for bits in (stat.S_ISUID, stat.S_ISGID):
            self.assertErrno(errno.EPERM, os.chmod, jar, 0o755 | bits, what="chmod(set-id)")
        os.chmod(jar, 0o640 | stat.S_ISVTX)  # other bits still change
        self.assertEqual(stat.S_IMODE(os.stat(jar).st_mode), 0o640 | stat.S_ISVTX)
        fd = os.open(os.path.join(top, "made"), os.O_CREAT | os.O_WRONLY, 0o6755)
        os.close(fd)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(top, "made")).st_mode) & 0o6000, 0)
        os.mkdir(os.path.join(top, "dir"), 0o2755)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(top, "dir")).st_mode) & 0o6000, 0)

    def test_unmount_with_open_files(self):
        u = self.stack.mount("open-files")
        os.mkdir(u.session("open"))
        path = os.path.join(u.session("open"), "cookies.txt")
        wfd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(wfd, b"written before SIGTERM\n")
        rfd = os.open(path, os.O_RDONLY)
        try:
            code = u.stop()
            self.assertEqual(code, 0, "cookiefs did not exit 0 on SIGTERM with open files")
            self.assertFalse(harness.mount_table_has(u.path), "mount still in /proc/mounts")
            # Using the stale descriptors must fail, not hang.
            outcome = {}

            def use_stale():
                try:
                    # With the writeback cache write() may land in the page
                    # cache; fsync() then has to report the loss.
                    os.write(wfd, b"after\n")
                    os.fsync(wfd)
                    outcome["write"] = "ok"
                except OSError as exc:
                    outcome["write"] = exc.errno
                try:
                    os.pread(rfd, 10, 0)
                    outcome["read"] = "ok"
                except OSError as exc:
                    outcome["read"] = exc.errno

            t = threading.Thread(target=use_stale, daemon=True)
            t.start()
            t.join(30)
            self.assertFalse(t.is_alive(), "I/O on a descriptor of the unmounted fs hangs")
            self.assertNotEqual(outcome.get("write"), "ok",
                                "write + fsync to the unmounted fs reported success")
        finally:
            for fd in (wfd, rfd):
                try:
                    os.close(fd)
                except OSError:
                    pass
        # The write made before SIGTERM survives: restart, then a fresh mount has it.
        u.start()
        self.assertEqual(harness.read_bytes(path), b"written before SIGTERM\n")
        fresh = self.stack.mount()
        harness.poll(lambda: harness.read_bytes(os.path.join(fresh.session("open"),
                                                             "cookies.txt")) ==
                     b"written before SIGTERM\n", harness.PROPAGATION_DEADLINE,
                     what="the write made before SIGTERM to reach a fresh mount")

    def test_storage_down_at_mount_time(self):
        d = self.stack.mount("offline", **{"offline-wait": "300ms"})
        os.mkdir(d.session("offline"))
        cached = os.path.join(d.session("offline"), "cookies.txt")
        harness.write_bytes(cached, b"cached\n", fsync=True)
        self.assertEqual(d.stop(), 0)
        self.stack.stop_storage()
        try:
            d.start()  # must come up without the storage service
            self.assertEqual(harness.read_bytes(cached), b"cached\n",
                             "cached data unreadable while storage is down")
            status = d.status_text()
            self.assertIn("disconnected", status.lower(),
                          f".cookiefs/ does not say disconnected:\n{status}")
            # Writes go to the local write-back journal meanwhile.
            harness.write_bytes(os.path.join(d.session("offline"), "later.txt"), b"offline\n")
            # A session this host does not hold may exist elsewhere: never
            # ENOENT (an engine would start a fresh jar and fork it), and no
            # mkdir of it either, until the service can say.
            self.assertErrno(errno.EAGAIN, os.stat, d.session("held-elsewhere"),
                             what="offline lookup of a session not held here")
            self.assertErrno(errno.EAGAIN, os.mkdir, d.session("held-elsewhere"),
                             what="offline mkdir of a session not held here")
        finally:
            self.stack.start_storage()
        harness.poll(lambda: "disconnected" not in d.status_text().lower(),
                     harness.START_TIMEOUT + harness.PROPAGATION_DEADLINE,
                     what="the mount to reconnect after the storage service came back")
        fresh = self.stack.mount()
        harness.poll(lambda: harness.read_bytes(os.path.join(fresh.session("offline"),
                                                             "later.txt")) == b"offline\n",
                     harness.PROPAGATION_DEADLINE,
                     what="a write made while disconnected to drain to PostgreSQL")

    def test_hung_service_is_detected(self):
        # A stopped service keeps its TCP connections open and answers
        # nothing: the mount's keep-alive ping notices and says so (it used
        # to report "connected" until a request timed out).
        d = self.stack.mount("hung")
        os.mkdir(d.session("hung"))
        self.assertNotIn("disconnected", d.status_text().lower())
        self.stack.storage.send_signal(signal.SIGSTOP)
        try:
            harness.poll(lambda: "disconnected" in d.status_text().lower(), 60,
                         what="the mount to notice the stopped storage service")
        finally:
            self.stack.storage.send_signal(signal.SIGCONT)
        harness.poll(lambda: "disconnected" not in d.status_text().lower(),
                     harness.START_TIMEOUT + harness.PROPAGATION_DEADLINE,
                     what="the mount to reconnect after the service resumed")
        harness.write_bytes(os.path.join(d.session("hung"), "c.txt"), b"after\n", fsync=True)
        with open(d.log_path) as f:
            self.assertIn("answered nothing for", f.read())

    def run_expecting_exit(self, args, mountpoint):
        """Runs cookiefs that should refuse to start. If it runs on instead,
        it is stopped (and any mount it stacked removed) and None returned."""
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            out, err = proc.communicate(timeout=60)
            return proc.returncode, err
        except subprocess.TimeoutExpired:
            harness.stop_process(proc)
            out, err = proc.communicate()
            return None, err

    def test_missing_or_busy_mountpoint_exits_2(self):
        base = [harness.binary("cookiefs"), "--storage", f"127.0.0.1:{self.stack.storage_port}",
                "--metrics-listen", "", "-f"]
        missing = os.path.join(self.stack.root, "no-such-dir")
        code, err = self.run_expecting_exit(
            base + ["--engine-id", "e-missing", "--cache-dir", self.stack.scratch("c"), missing],
            missing)
        self.assertEqual(code, 2, f"missing mountpoint: exit {code}, stderr {err.strip()!r}")
        self.assertEqual(len(err.strip().splitlines()), 1, f"error is not one line: {err!r}")
        code, err = self.run_expecting_exit(
            base + ["--engine-id", "e-busy", "--cache-dir", self.stack.scratch("c"), self.m.path],
            self.m.path)
        self.assertEqual(code, 2, f"busy mountpoint (already a cookiefs mount): exit {code} "
                         f"(None = kept running), stderr {err.strip()!r}")
        self.assertIn("already in use by a running cookiefs", err)
        self.assertTrue(os.path.isdir(os.path.join(self.m.path, ".cookiefs")),
                        "the existing mount was harmed by the second cookiefs")

    def test_restart_after_kill9_clears_its_stale_mount(self):
        r = self.stack.mount("restart")
        os.mkdir(r.session("kept"))
        jar = os.path.join(r.session("kept"), "cookies.txt")
        harness.write_bytes(jar, b"before the crash\n", fsync=True)
        # As systemd, `mountpoint` or ls do: the root's attributes are now in
        # the kernel's cache (24 h), so stat of the dead mount still succeeds.
        os.stat(r.path)
        r.proc.kill()  # SIGKILL, and no force_unmount: the dead mount stays
        r.proc.wait()
        self.assertTrue(harness.mount_table_has(r.path), "the dead mount left the mount table")
        self.assertTrue(os.path.isdir(r.path), "stat of the dead mount's root fails (not cached)")
        r.start()  # on the same mountpoint; exits 2 if it finds it "in use"
        self.assertEqual(harness.read_bytes(jar), b"before the crash\n")
        harness.write_bytes(jar, b"after the restart\n", fsync=True)
        with open("/proc/self/mountinfo") as f:
            on_point = [line for line in f if line.split()[4] == os.path.realpath(r.path)]
        self.assertEqual(len(on_point), 1, f"mounts on the mountpoint: {on_point}")

    def test_help_and_version(self):
        for component in ("cookiefs", "storage-service"):
            for flag in ("--help", "--version"):
                res = subprocess.run([harness.binary(component), flag], capture_output=True,
                                     text=True, timeout=30)
                self.assertEqual(res.returncode, 0, f"{component} {flag}: {res.stderr}")
                self.assertTrue(res.stdout.strip(), f"{component} {flag} printed nothing")


if __name__ == "__main__":
    unittest.main(verbosity=2)
