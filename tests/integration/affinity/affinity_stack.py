"""Shared pieces of the affinity tests: the mount harness of
tests/integration/mount (imported, not copied), the cookiefs-shim CLI, and a
pausable TCP proxy that cuts a mount off the storage service without killing
either (the "forced move" scenario).

Single-threaded use of a Stack, as in harness.py; the proxy runs its own
threads.
"""

import json
import os
import socket
import subprocess
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "mount"))
import harness  # noqa: E402,F401  (re-exported)

from harness import Mount, Stack, StackTestCase, binary, poll, read_bytes, write_bytes  # noqa


def shim(stack, *args, control=None, timeout=60):
    """Runs cookiefs-shim; returns the CompletedProcess (never raises on rc)."""
    cmd = [binary("engine-shim", "cookiefs-shim")]
    if control:
        cmd += ["--control", control]
    else:
        cmd += ["--storage", f"127.0.0.1:{stack.storage_port}"]
    cmd += list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def assign(stack, session, engine, grace="3s", check=True):
    res = shim(stack, "--grace", grace, "--json", "assign", session, engine)
    if check and res.returncode != 0:
        raise AssertionError(f"assign {session} -> {engine} failed ({res.returncode}): "
                             f"{res.stderr.strip()}")
    return res


def json_reply(res):
    """The JSON line of a `--json` run (log lines may come before it)."""
    for line in reversed(res.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"no JSON in cookiefs-shim output: {res.stdout!r} {res.stderr!r}")


def control_socket(mount):
    return os.path.join(mount.cache_dir, "control.sock")


class PausableProxy:
    """Forwards 127.0.0.1:<port> to the storage service. pause() stops moving
    bytes in both directions (connections stay open, nothing is lost);
    resume() moves everything held back."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.running = threading.Event()
        self.running.set()
        self.closed = False
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def pause(self):
        self.running.clear()

    def resume(self):
        self.running.set()

    def close(self):
        self.closed = True
        self.running.set()
        for s in [self.listener] + self.socks:
            try:
                s.close()
            except OSError:
                pass

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.running.wait()
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            self.socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self.running.wait()  # paused: hold the bytes
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class ProxiedMount(Mount):
    """A mount that reaches the storage service only through `proxy`."""

    def __init__(self, stack, name, engine_id, options, proxy):
        super().__init__(stack, name, engine_id, options)
        self.proxy = proxy

    def command(self):
        cmd = super().command()
        i = cmd.index("--storage")
        cmd[i + 1] = f"127.0.0.1:{self.proxy.port}"
        return cmd


def proxied_mount(stack, name, proxy, **options):
    opts = dict(stack.mount_options)
    opts.update(options)
    m = ProxiedMount(stack, name, f"engine-{name}", opts, proxy)
    stack.mounts[name] = m
    m.start()
    return m
