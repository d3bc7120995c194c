"""The filesystems the benchmark compares, each set up from nothing and torn
down again by bench/run.py:

  tmpfs        a private tmpfs mount: the limit.
  ext4         a directory on the local disk (/var/tmp), what a host would use
               without cookiefs.
  passthrough  Debian's libfuse example passthrough_ll, compiled at bench time
               and mounted over the tmpfs with its fastest caching options
               (cache=always: 1-day entry/attr timeouts and keep_cache;
               writeback cache): the FUSE floor.
  sshfs        sshfs over loopback to a private sshd (spare port, generated
               host and client keys, nothing of the system's ssh touched).
  cookiefs     two cookiefs mounts (engines A and B) over one storage-service
               and a private PostgreSQL.
  *-cpu0       the daemon and the workload pinned to CPU 0.
  *-poll       the workload run with the guest's halt polling on (HaltPoll).

Every target has `dir` (where workloads write), `reader_dir` (another view of
the same files for the cold-read workload: a second mount where one exists),
`drop_cache` (the cold read drops the file's pages with fadvise) and
`metrics` (URLs exposing cookiefs_fuse_requests_total).

Everything a target starts is registered on the Teardown given to start(),
which undoes it in reverse order. Single-threaded.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

SOURCE_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
START_TIMEOUT = 60.0


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


class Teardown:
    """LIFO list of undo actions; each runs once, failures are reported, not raised."""

    def __init__(self):
        self.actions = []

    def add(self, what, fn, *args):
        self.actions.append((what, fn, args))

    def run(self):
        while self.actions:
            what, fn, args = self.actions.pop()
            try:
                fn(*args)
            except Exception as exc:  # noqa: BLE001 - keep tearing down
                log(f"teardown: {what}: {exc!r}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mounted(path):
    real = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == real for line in f)


def wait_for(predicate, what, proc=None, log_path=None, timeout=START_TIMEOUT):
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}{tail(log_path)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {timeout:.0f}s{tail(log_path)}")
        time.sleep(0.05)


def pinned(cpus):
    """Command prefix that runs a program on CPU list `cpus` (taskset -c); none for None."""
    return ["taskset", "-c", cpus] if cpus else []


def tail(path, n=15):
    if not path or not os.path.exists(path):
        return ""
    with open(path, errors="replace") as f:
        return "\n" + "".join(f.readlines()[-n:])


def stop_process(proc, timeout=20):
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def unmount(path):
    if mounted(path):
        subprocess.run(["fusermount3", "-uz", path], capture_output=True, check=False)
    if mounted(path):
        subprocess.run(["umount", "-l", path], capture_output=True, check=False)


def spawn(cmd, log_path, teardown, what, env=None):
    logf = open(log_path, "ab")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)  # our Ctrl-C is handled here
    logf.close()
    teardown.add(f"stop {what}", stop_process, proc)
    return proc


def fuse_mount(cmd, mountpoint, log_path, teardown, what):
    os.makedirs(mountpoint, exist_ok=True)
    teardown.add(f"unmount {what}", unmount, mountpoint)
    proc = spawn(cmd, log_path, teardown, what)
    wait_for(lambda: mounted(mountpoint), what, proc, log_path)
    return proc


class HaltPoll:
    """cpuidle-haltpoll's guest_halt_poll_ns, set while one target's workloads
    run and put back after each. An idle vCPU of a KVM guest polls up to this
    long for work before it halts; 200,000 ns is the driver's default, which
    this VM's kernel command line turns off (0), so that every wake-up of an
    idle vCPU is a VM exit on the host (see docs/performance.md)."""

    PATH = "/sys/module/haltpoll/parameters/guest_halt_poll_ns"

    def __init__(self, ns):
        self.ns = ns

    def check(self, teardown):
        """Raises when this machine has no halt polling to set; registers the
        restore of the value found, for a run torn down mid-workload."""
        if not os.path.exists(self.PATH):
            raise RuntimeError("no cpuidle-haltpoll here (not a KVM guest with that driver)")
        if not os.access(self.PATH, os.W_OK):
            raise RuntimeError(f"{self.PATH} is not writable (needs root)")
        teardown.add("restore guest_halt_poll_ns", self._write, self._read())

    def _read(self):
        with open(self.PATH) as f:
            return f.read().strip()

    def _write(self, value):
        with open(self.PATH, "w") as f:
            f.write(str(value))

    @contextlib.contextmanager
    def applied(self):
        old = self._read()
        self._write(self.ns)
        try:
            yield
        finally:
            self._write(old)


class Target:
    name = "?"
    drop_cache = False
    cold_note = ""
    # Prefix of the session ids a workload creates: targets sharing one
    # storage service must not meet each other's sessions.
    session_tag = ""
    # CPU list (taskset -c) for the filesystem's daemon and the workload
    # process; None lets the scheduler place both.
    cpus = None
    # A HaltPoll in force while this target's workloads run; None: as booted.
    halt_poll = None

    def __init__(self, root):
        self.root = root
        self.dir = self.reader_dir = None
        self.metrics = []

    def start(self, teardown):
        raise NotImplementedError

    def failure(self):
        return None


class Tmpfs(Target):
    """Mounted once by the harness (other targets use it as backing store)."""

    name = "tmpfs"
    cold_note = "tmpfs has no cache to drop: the first read by another process"

    def __init__(self, root, tmpfs_root):
        super().__init__(root)
        self.tmpfs_root = tmpfs_root

    def start(self, teardown):
        self.dir = self.reader_dir = os.path.join(self.tmpfs_root, "tmpfs-target")
        os.makedirs(self.dir)


class Ext4(Target):
    name = "ext4"
    drop_cache = True
    cold_note = "fsync + POSIX_FADV_DONTNEED, then read from disk"

    def __init__(self, root, disk_dir):
        super().__init__(root)
        self.disk_dir = disk_dir

    def start(self, teardown):
        self.dir = self.reader_dir = os.path.join(self.disk_dir, "ext4-target")
        os.makedirs(self.dir)
        fstype = subprocess.run(["stat", "-f", "-c", "%T", self.dir], capture_output=True,
                                text=True, check=True).stdout.strip()
        self.fstype = fstype
        if "ext" not in fstype:
            log(f"warning: {self.disk_dir} is {fstype}, not ext4")


def compile_passthrough_ll(bin_dir):
    src_dir = "/usr/share/doc/libfuse3-dev/examples"
    out = os.path.join(bin_dir, "passthrough_ll")
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "fuse3"], capture_output=True,
                           text=True, check=True).stdout.split()
    subprocess.run(["gcc", "-O2", "-Wall", "-I", src_dir, os.path.join(src_dir, "passthrough_ll.c"),
                    "-o", out, *flags], check=True, capture_output=True)
    return out


class Passthrough(Target):
    name = "passthrough_ll"
    cold_note = "a second passthrough_ll mount of the same source reads it first"

    def __init__(self, root, tmpfs_root):
        super().__init__(root)
        self.tmpfs_root = tmpfs_root

    def start(self, teardown):
        exe = compile_passthrough_ll(os.path.join(self.root, "bin"))
        src = os.path.join(self.tmpfs_root, f"{self.name}-src")
        os.makedirs(src)
        opts = f"source={src},cache=always,writeback"
        views = []
        for view in ("a", "b"):
            mnt = os.path.join(self.root, "mnt", f"{self.name}-{view}")
            fuse_mount([*pinned(self.cpus), exe, "-f", "-o", opts, mnt], mnt,
                       os.path.join(self.root, "logs", f"{self.name}-{view}.log"), teardown,
                       f"{self.name} {view}")
            views.append(mnt)
        self.dir, self.reader_dir = views


class PassthroughOneCpu(Passthrough):
    """The floor with its daemon and the workload on one CPU (see CookiefsOneCpu)."""
    name = "passthrough_ll-cpu0"
    cpus = "0"


class PassthroughPoll(Passthrough):
    """The floor with the guest's halt polling on (see CookiefsPoll)."""
    name = "passthrough_ll-poll"
    halt_poll = HaltPoll(200_000)


class Sshfs(Target):
    name = "sshfs"
    cold_note = "a second sshfs mount of the same remote directory reads it first"

    def __init__(self, root, tmpfs_root):
        super().__init__(root)
        self.tmpfs_root = tmpfs_root

    def start(self, teardown):
        ssh = os.path.join(self.root, "ssh")
        os.makedirs(ssh, mode=0o700)
        for key in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                            os.path.join(ssh, key)], check=True)
        shutil.copy(os.path.join(ssh, "client_key.pub"), os.path.join(ssh, "authorized_keys"))
        port = free_port()
        config = os.path.join(ssh, "sshd_config")
        with open(config, "w") as f:
            f.write(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {ssh}/host_key
AuthorizedKeysFile {ssh}/authorized_keys
PidFile {ssh}/sshd.pid
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
Subsystem sftp internal-sftp
""")
        # sshd insists on its privilege-separation directory existing.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        log_path = os.path.join(self.root, "logs", "sshd.log")
        proc = spawn(["/usr/sbin/sshd", "-D", "-e", "-f", config], log_path, teardown, "sshd")
        wait_for(lambda: port_open(port), "sshd", proc, log_path)
        src = os.path.join(self.tmpfs_root, "sshfs-src")
        os.makedirs(src)
        user = os.environ.get("USER") or "root"
        views = []
        for view in ("a", "b"):
            mnt = os.path.join(self.root, "mnt", f"sshfs-{view}")
            fuse_mount(["sshfs", "-f", f"{user}@127.0.0.1:{src}", mnt, "-p", str(port),
                        "-o", f"IdentityFile={ssh}/client_key,StrictHostKeyChecking=no,"
                              "UserKnownHostsFile=/dev/null,BatchMode=yes,LogLevel=ERROR"],
                       mnt, os.path.join(self.root, "logs", f"sshfs-{view}.log"), teardown,
                       f"sshfs {view}")
            views.append(mnt)
        self.dir, self.reader_dir = views


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class CookiefsStack:
    """PostgreSQL + one storage-service, shared by the cookiefs target and the
    service-level benchmarks."""

    def __init__(self, root, build_dir, disk_dir):
        self.root, self.build_dir, self.disk_dir = root, build_dir, disk_dir

    def binary(self, component, name=None):
        path = os.path.join(self.build_dir, component, name or component)
        if not os.access(path, os.X_OK):
            raise FileNotFoundError(f"{path} is not built")
        return path

    def start(self, teardown):
        self.pg_dir = os.path.join(self.disk_dir, "pg")
        self.pg_port = free_port()
        script = os.path.join(SOURCE_DIR, "scripts", "pg-cluster.sh")
        teardown.add("stop PostgreSQL", subprocess.run, [script, "stop", self.pg_dir])
        self.database_url = subprocess.run([script, "start", self.pg_dir, str(self.pg_port)],
                                           capture_output=True, text=True,
                                           check=True).stdout.strip().splitlines()[-1]
        self.storage_port, self.storage_metrics = free_port(), free_port()
        log_path = os.path.join(self.root, "logs", "storage-service.log")
        proc = spawn([self.binary("storage-service"), "--database-url", self.database_url,
                      "--listen", f"127.0.0.1:{self.storage_port}", "--metrics-listen",
                      f"127.0.0.1:{self.storage_metrics}"], log_path, teardown, "storage-service")
        wait_for(lambda: port_open(self.storage_port), "storage-service", proc, log_path)
        self.storage = f"127.0.0.1:{self.storage_port}"
        self.proc, self.log_path = proc, log_path

    def failure(self):
        """Why the stack can no longer serve, or None. Checked before anything
        that would block on it (an fsync on a mount waits for the service)."""
        if self.proc.poll() is not None:
            return f"storage-service exited with {self.proc.returncode}{tail(self.log_path, 3)}"
        return None

    def mount(self, teardown, view, cache_root, extra=(), cpus=None):
        """Starts a cookiefs mount with engine id bench-<view> (on CPUs `cpus`, a
        taskset list, if given); returns (path, proc, metrics)."""
        mnt = os.path.join(self.root, "mnt", f"cookiefs-{view}")
        cache = os.path.join(cache_root, f"cookiefs-cache-{view}")
        os.makedirs(cache)
        metrics_port = free_port()
        log_path = os.path.join(self.root, "logs", f"cookiefs-{view}.log")
        proc = fuse_mount([*pinned(cpus), self.binary("cookiefs"), "--storage", self.storage,
                           "--engine-id", f"bench-{view}", "--cache-dir", cache, "--metrics-listen",
                           f"127.0.0.1:{metrics_port}", *extra, "-f", mnt], mnt, log_path,
                          teardown, f"cookiefs {view}")
        wait_for(lambda: os.path.isdir(os.path.join(mnt, ".cookiefs")), f"cookiefs {view}", proc,
                 log_path)
        return mnt, proc, f"http://127.0.0.1:{metrics_port}/metrics"


class Cookiefs(Target):
    name = "cookiefs"
    cold_note = ("mount B (engine B) reads a session mount A wrote and fsync'ed: "
                 "fetched from the storage service on lookup")
    views = ("a", "b")
    extra = ()

    def __init__(self, root, stack, cache_root):
        super().__init__(root)
        self.stack, self.cache_root = stack, cache_root

    def start(self, teardown):
        a, b = self.views
        self.dir, self.proc_a, metrics_a = self.stack.mount(teardown, a, self.cache_root,
                                                            self.extra, self.cpus)
        self.reader_dir, self.proc_b, metrics_b = self.stack.mount(teardown, b, self.cache_root,
                                                                   self.extra, self.cpus)
        self.metrics = [metrics_a, metrics_b]


class CookiefsWriteback(Cookiefs):
    """The same with fuse.writeback_cache: true (the kernel's writeback cache)."""
    name = "cookiefs-wb"
    views = ("wa", "wb")
    session_tag = "wb."
    extra = ("--fuse-writeback-cache",)

    def failure(self):
        return self.stack.failure()


class CookiefsUring(CookiefsWriteback):
    """cookiefs-wb served through FUSE over io_uring (fuse.io_uring: true):
    each request is queued on a ring of the CPU its caller runs on and served
    by a mount thread pinned there, with no placement of the workload."""
    name = "cookiefs-wb-uring"
    views = ("ua", "ub")
    session_tag = "wu."
    extra = ("--fuse-writeback-cache", "--fuse-io-uring")


class CookiefsOneCpu(CookiefsWriteback):
    """cookiefs-wb with its daemon and the workload process on CPU 0. A FUSE
    request wakes a daemon thread and its reply wakes the application; on this
    VM (halt polling off) a wake-up on the other, halted vCPU costs more than
    the work. On one CPU both are plain context switches. An operator gets the
    same with taskset or a shared cgroup cpuset for the engine and the mount."""
    name = "cookiefs-wb-cpu0"
    views = ("pa", "pb")
    session_tag = "wp."
    cpus = "0"


class CookiefsPoll(CookiefsWriteback):
    """cookiefs-wb with the guest's halt polling on while its workloads run:
    an idle vCPU polls up to 200 µs before it halts, so the wake-ups of a FUSE
    round trip (the daemon's, then the caller's) find the other vCPU awake.
    A machine setting, not the mount's: what an operator of a VM gets from
    the cpuidle-haltpoll driver's default, with neither process pinned."""
    name = "cookiefs-wb-poll"
    views = ("ha", "hb")
    session_tag = "wh."
    halt_poll = HaltPoll(200_000)
