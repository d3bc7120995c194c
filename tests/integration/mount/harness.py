"""Test harness for the mount's integration tests: a private PostgreSQL, one
storage-service and any number of cookiefs mounts, all real processes.

`Stack` is a context manager. It owns a temp dir holding everything (the
PostgreSQL cluster, every mount's cache dir and mountpoint, every daemon's
log) and tears it all down on exit, even after a failure: SIGTERM (then
SIGKILL) for the daemons, `fusermount3 -uz` for mounts left behind, `stop`
for PostgreSQL, then the temp dir goes.

`StackTestCase` shares one Stack per test file (setUpClass) and prints the
daemons' logs when a test of the class fails.

Single-threaded: one test thread drives a Stack.
"""

import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

SOURCE_DIR = os.environ.get(
    "COOKIEFS_SOURCE_DIR",
    os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))
BUILD_DIR = os.environ.get("COOKIEFS_BUILD_DIR", os.path.join(SOURCE_DIR, "build"))

# Generous: a 2-core CI machine running several suites at once.
START_TIMEOUT = float(os.environ.get("COOKIEFS_TEST_START_TIMEOUT", "30"))
STOP_TIMEOUT = 20.0

# The commit timing every mount gets unless a test says otherwise.
WRITEBACK = os.environ.get("COOKIEFS_TEST_WRITEBACK") == "1"
IO_URING = os.environ.get("COOKIEFS_TEST_IO_URING") == "1"
COMMIT_DELAY = "20ms"
COMMIT_MAX_LAG_S = 1.0
# How long a test waits for an asynchronous commit to become visible elsewhere.
PROPAGATION_DEADLINE = 10 * COMMIT_MAX_LAG_S + 5


def binary(component, name=None):
    path = os.path.join(BUILD_DIR, component, name or component)
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"{path} is not built (COOKIEFS_BUILD_DIR={BUILD_DIR})")
    return path


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(predicate, timeout, interval=0.02, what="condition"):
    """Calls predicate until it returns a truthy value or the deadline passes.
    Returns that value; raises TimeoutError naming `what` otherwise. Exceptions
    of the predicate count as 'not yet' and the last one is reported."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - reported below
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def tail(path, limit=200):
    try:
        with open(path, "r", errors="replace") as f:
            lines = f.readlines()
    except FileNotFoundError:
        return "(no log)\n"
    return "".join(lines[-limit:])


def is_mounted(path):
    """True for a live FUSE mount and for a dead one (ENOTCONN)."""
    try:
        return os.path.ismount(path)
    except OSError:
        return True


def mount_table_has(path):
    real = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == real for line in f)


def force_unmount(path):
    if mount_table_has(path):
        subprocess.run(["fusermount3", "-uz", path], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
        if mount_table_has(path):
            subprocess.run(["umount", "-l", path], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False)


def stop_process(proc, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
    """Signals proc and waits; SIGKILL after the timeout. Returns exit code."""
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        return proc.wait()


class DaemonFailed(RuntimeError):
    pass


class Mount:
    """One cookiefs process serving one mountpoint with its own engine id and
    cache dir. Options are the daemon's long flags without the dashes."""

    def __init__(self, stack, name, engine_id, options):
        self.stack = stack
        self.name = name
        self.engine_id = engine_id
        self.options = dict(options)
        self.path = os.path.join(stack.root, "mnt", name)
        self.cache_dir = os.path.join(stack.root, "cache", name)
        self.log_path = os.path.join(stack.root, "logs", f"cookiefs-{name}.log")
        self.proc = None
        self.starts = 0
        os.makedirs(self.path)
        os.makedirs(self.cache_dir)

    def command(self):
        cmd = [binary("cookiefs"), "--storage", f"127.0.0.1:{self.stack.storage_port}",
               "--engine-id", self.engine_id, "--cache-dir", self.cache_dir]
        if "metrics-listen" not in self.options:
            cmd += ["--metrics-listen", ""]
        for key, value in self.options.items():
            cmd += [f"--{key}"] if value is True else [f"--{key}", str(value)]
        return cmd + ["-f", self.path]

    def start(self, wait=True, **override):
        assert self.proc is None or self.proc.poll() is not None, "mount already running"
        self.options.update(override)
        self.starts += 1
        log = open(self.log_path, "a")
        log.write(f"==== start #{self.starts}: {' '.join(self.command())}\n")
        log.flush()
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT)
        log.close()
        if wait:
            self.wait_ready()
        return self

    def ready(self):
        if self.proc.poll() is not None:
            raise DaemonFailed(f"cookiefs {self.name} exited with {self.proc.returncode} "
                               f"before the mount was ready:\n{tail(self.log_path, 40)}")
        if not mount_table_has(self.path):
            return False
        try:
            # Answered by a daemon, never from the kernel's caches: a dead
            # mount (a restart after kill -9 has yet to replace) says ENOTCONN.
            os.statvfs(self.path)
        except OSError:
            return False
        return os.path.isdir(os.path.join(self.path, ".cookiefs"))

    def wait_ready(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"cookiefs {self.name} not ready after {timeout:.0f}s "
                                   f"(no {self.path}/.cookiefs):\n{tail(self.log_path, 40)}")
            time.sleep(0.02)

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM: the clean shutdown. Returns the exit code."""
        code = stop_process(self.proc, signal.SIGTERM, timeout)
        force_unmount(self.path)
        return code

    def kill9(self):
        """Crash: SIGKILL the daemon and drop the dead mount, keeping the cache dir."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        force_unmount(self.path)

    def restart_after_crash(self, **override):
        self.kill9()
        return self.start(**override)

    def session(self, session_id):
        return os.path.join(self.path, session_id)

    def status_text(self):
        """Every status file of <mount>/.cookiefs concatenated (name: content)."""
        out = []
        top = os.path.join(self.path, ".cookiefs")
        for dirpath, _dirs, files in os.walk(top):
            for fname in sorted(files):
                fpath = os.path.join(dirpath, fname)
                with contextlib.suppress(OSError):
                    with open(fpath, "r", errors="replace") as f:
                        out.append(f"{os.path.relpath(fpath, top)}: {f.read()}")
        return "\n".join(out)


class Stack:
    """PostgreSQL + storage-service + mounts. Use as a context manager."""

    def __init__(self, mount_options=None):
        self.root = None
        self.pg_dir = None
        self.database_url = None
        self.storage_port = None
        self.storage = None
        self.storage_log = None
        self.mounts = {}
        self.mount_options = {"commit-delay": COMMIT_DELAY,
                              "commit-max-lag": f"{int(COMMIT_MAX_LAG_S * 1000)}ms"}
        # The *.writeback ctest entries run the same tests with the kernel's
        # writeback cache (fuse.writeback_cache: true).
        if WRITEBACK:
            self.mount_options["fuse-writeback-cache"] = True
        # The *.io_uring entries: FUSE over io_uring (fuse.io_uring: true).
        if IO_URING:
            self.mount_options["fuse-io-uring"] = True
        self.mount_options.update(mount_options or {})
        self._engine_seq = 0

    # ---- lifecycle
    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.dump_logs(sys.stderr)
            self.close()
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and exc_type is not unittest.SkipTest:
            self.dump_logs(sys.stderr)
        self.close()
        return False

    def start(self):
        # /tmp, not the build dir: the postgres user must traverse the parents.
        self.root = tempfile.mkdtemp(prefix="cookiefs-mount-test-")
        os.chmod(self.root, 0o755)
        for sub in ("mnt", "cache", "logs", "scratch"):
            os.makedirs(os.path.join(self.root, sub))
        self.pg_dir = os.path.join(self.root, "pg")
        self.storage_log = os.path.join(self.root, "logs", "storage-service.log")
        self._start_postgres()
        self.storage_port = free_port()
        self.start_storage()

    def _start_postgres(self):
        script = os.path.join(SOURCE_DIR, "scripts", "pg-cluster.sh")
        for _attempt in range(3):  # a free port can be taken by someone else meanwhile
            port = free_port()
            res = subprocess.run([script, "start", self.pg_dir, str(port)],
                                 capture_output=True, text=True)
            if res.returncode == 0:
                self.database_url = res.stdout.strip().splitlines()[-1]
                return
            subprocess.run([script, "stop", self.pg_dir], capture_output=True)
        raise RuntimeError(f"pg-cluster.sh start failed: {res.stderr.strip()}")

    def start_storage(self):
        log = open(self.storage_log, "a")
        cmd = [binary("storage-service"), "--database-url", self.database_url,
               "--listen", f"127.0.0.1:{self.storage_port}", "--metrics-listen", ""]
        log.write(f"==== start: {' '.join(cmd)}\n")
        log.flush()
        self.storage = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT)
        log.close()

        def listening():
            if self.storage.poll() is not None:
                raise DaemonFailed(f"storage-service exited with {self.storage.returncode}:\n"
                                   f"{tail(self.storage_log, 40)}")
            with socket.socket() as s:
                s.settimeout(1)
                return s.connect_ex(("127.0.0.1", self.storage_port)) == 0

        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if listening():
                    return
            except DaemonFailed:
                raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"storage-service not listening after {START_TIMEOUT:.0f}s:\n"
                                   f"{tail(self.storage_log, 40)}")
            time.sleep(0.05)

    def stop_storage(self):
        return stop_process(self.storage)

    def close(self):
        if self.root is None:
            return
        for m in list(self.mounts.values()):
            with contextlib.suppress(Exception):
                m.stop(timeout=10)
            with contextlib.suppress(Exception):
                force_unmount(m.path)
        with contextlib.suppress(Exception):
            self.stop_storage()
        if self.pg_dir is not None:
            subprocess.run([os.path.join(SOURCE_DIR, "scripts", "pg-cluster.sh"), "stop",
                            self.pg_dir], capture_output=True, check=False)
        if os.environ.get("COOKIEFS_KEEP_TEST_DIR"):
            print(f"kept {self.root}", file=sys.stderr)
        else:
            shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    # ---- mounts
    def mount(self, name=None, start=True, **options):
        """A new mount with a fresh engine id, cache dir and mountpoint."""
        self._engine_seq += 1
        name = name or f"m{self._engine_seq}"
        assert name not in self.mounts, name
        opts = dict(self.mount_options)
        opts.update(options)
        m = Mount(self, name, f"engine-{name}", opts)
        self.mounts[name] = m
        if start:
            m.start()
        return m

    def scratch(self, name):
        """A local (non-FUSE) directory for copies and side channels."""
        path = tempfile.mkdtemp(prefix=f"{name}-", dir=os.path.join(self.root, "scratch"))
        return path

    def dump_logs(self, out):
        if self.root is None:
            return
        out.write("\n----- daemon states -----\n")
        procs = [("storage-service", self.storage)] + [
            (f"cookiefs {m.name}", m.proc) for m in self.mounts.values()]
        for name, proc in procs:
            code = None if proc is None else proc.poll()
            state = ("never started" if proc is None else "running" if code is None else
                     f"killed by signal {-code}" if code < 0 else f"exited with {code}")
            out.write(f"{name}: {state}\n")
        logs = os.path.join(self.root, "logs")
        for fname in sorted(os.listdir(logs)) if os.path.isdir(logs) else []:
            out.write(f"\n----- {fname} (last 200 lines) -----\n")
            out.write(tail(os.path.join(logs, fname)))
        if self.pg_dir and os.path.exists(os.path.join(self.pg_dir, "postgres.log")):
            out.write("\n----- postgres.log (last 50 lines) -----\n")
            out.write(tail(os.path.join(self.pg_dir, "postgres.log"), 50))
        out.flush()


class StackTestCase(unittest.TestCase):
    """One Stack per test class; daemons' logs are printed after a failing test."""

    stack = None
    mount_options = {}

    @classmethod
    def setUpClass(cls):
        cls.stack = Stack(cls.mount_options)
        cls.stack.__enter__()
        # Runs even when a subclass's setUpClass fails after this point (a
        # mount that does not start): tearDownClass is then not called, and
        # the stack's PostgreSQL and daemons would outlive the test.
        cls.addClassCleanup(StackTestCase._close_stack, cls)

    @staticmethod
    def _close_stack(cls):
        if cls.stack is not None:
            cls.stack.__exit__(None, None, None)
            cls.stack = None

    @classmethod
    def tearDownClass(cls):
        StackTestCase._close_stack(cls)

    def run(self, result=None):
        result = result if result is not None else self.defaultTestResult()
        before = len(result.failures) + len(result.errors)
        out = super().run(result)
        storage = self.stack.storage if self.stack is not None else None
        if storage is not None and storage.poll() is not None:
            # Blame the test during which the service died, then give the
            # next tests a live one so that their results mean something.
            code = storage.returncode
            how = f"killed by signal {-code}" if code < 0 else f"exited with {code}"
            result.addFailure(self, (AssertionError, AssertionError(
                f"storage-service {how} during this test:\n{tail(self.stack.storage_log, 15)}"),
                None))
            with contextlib.suppress(Exception):
                self.stack.start_storage()
        if len(result.failures) + len(result.errors) > before and self.stack is not None:
            sys.stderr.write(f"\n===== daemon logs after failure of {self.id()} =====\n")
            self.stack.dump_logs(sys.stderr)
        return out

    # ---- assertions shared by the tests
    def assertErrno(self, expected, fn, *args, what=None):
        """fn(*args) must raise OSError with one of the expected errnos."""
        expected = expected if isinstance(expected, (tuple, list, set)) else (expected,)
        names = "/".join(errno.errorcode[e] for e in expected)
        try:
            fn(*args)
        except OSError as exc:
            if exc.errno not in expected:
                self.fail(f"{what or fn.__name__}: expected {names}, got "
                          f"{errno.errorcode.get(exc.errno, exc.errno)} ({exc})")
            return exc
        self.fail(f"{what or fn.__name__}: expected {names}, but it succeeded")


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def write_bytes(path, data, flags=os.O_WRONLY | os.O_CREAT | os.O_TRUNC, fsync=False):
    fd = os.open(path, flags, 0o600)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def assign(stack, session, engine_id, grace="300ms"):
    """What the network manager does: `cookiefs-shim assign` of `session` to
    `engine_id`. Returns the reply (a dict); raises AssertionError naming the
    exit code and stderr when the assign fails."""
    import json
    res = subprocess.run([binary("engine-shim", "cookiefs-shim"), "--storage",
                          f"127.0.0.1:{stack.storage_port}", "--grace", grace, "--json",
                          "assign", session, engine_id], capture_output=True, text=True,
                         timeout=120)
    if res.returncode != 0:
        raise AssertionError(f"assign to {engine_id} failed ({res.returncode}): "
                             f"{res.stderr.strip()[-300:]}")
    for line in reversed(res.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"no JSON in cookiefs-shim output: {res.stdout!r}")


def fsync_path(path):
    """Forces a commit of path's session: fsync returns only after the
    session's snapshot is in PostgreSQL (the mount's contract)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_session(src_dir, dst_dir):
    """Copies a session dir (as seen through a mount) to a local dir, reading
    each file once. Symlinks are copied as links."""
    shutil.rmtree(dst_dir, ignore_errors=True)
    shutil.copytree(src_dir, dst_dir, symlinks=True)
    return dst_dir


def session_fingerprint(path):
    """(relative path, bytes) of every file, for comparing two copies."""
    items = []
    for dirpath, _dirs, files in os.walk(path):
        for fname in sorted(files):
            fpath = os.path.join(dirpath, fname)
            if os.path.islink(fpath):
                items.append((os.path.relpath(fpath, path), "->" + os.readlink(fpath)))
            else:
                items.append((os.path.relpath(fpath, path), read_bytes(fpath)))
    return sorted(items)


def stable_copy(src_dir, dst_dir, timeout=PROPAGATION_DEADLINE):
    """Copies until two consecutive copies are equal, so a push that lands in
    the middle of a copy cannot produce a mix of two snapshots."""
    scratch = dst_dir + ".prev"
    copy_session(src_dir, scratch)
    deadline = time.monotonic() + timeout
    while True:
        copy_session(src_dir, dst_dir)
        if session_fingerprint(dst_dir) == session_fingerprint(scratch):
            shutil.rmtree(scratch, ignore_errors=True)
            return dst_dir
        if time.monotonic() > deadline:
            raise TimeoutError(f"{src_dir} kept changing for {timeout:.0f}s")
        shutil.rmtree(scratch, ignore_errors=True)
        os.rename(dst_dir, scratch)
