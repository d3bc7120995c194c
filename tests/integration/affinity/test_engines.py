"""Real engines across a hand-off: an engine on host A gets persistent
cookies from a local HTTP server (Set-Cookie with Max-Age, and
document.cookie from the page's script); the NM hands the session to host B
(`cookiefs-shim assign`); the same engine on host B sends both cookies back.
Engines: cog (WPE WebKit) with its SQLite jar and its text jar, Chromium
headless with Default/Cookies a symlink into the mount.

An engine that cannot start here FAILS the test with the reason (install:
apt-get install --no-install-recommends cog chromium libgles2)."""

import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import affinity_stack as af  # noqa: E402
from affinity_stack import harness  # noqa: E402

ENGINE_TIMEOUT = 60


class CookieServer:
    """Serves / (sets cookie a by header and b by script, then fetches
    /after-js) and logs the Cookie header of every request."""

    def __init__(self):
        self.log = []  # (path, cookie header)
        self.cond = threading.Condition()
        self.token = uuid.uuid4().hex[:12]
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                cookie = self.headers.get("Cookie", "")
                with outer.cond:
                    outer.log.append((self.path, cookie))
                    outer.cond.notify_all()
                sys.stderr.write(f"[cookie-server] GET {self.path} Cookie: {cookie!r}\n")
                if self.path.startswith("/after-js"):
                    body = b"ok"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                else:
                    body = (
                        "<html><body><p id=p>cookie test</p><script>"
                        f"document.cookie = 'b=js-{outer.token}; max-age=31536000; path=/';"
                        "fetch('/after-js?c=' + encodeURIComponent(document.cookie));"
                        "</script></body></html>").encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Set-Cookie",
                                     f"a=hdr-{outer.token}; Max-Age=31536000; Path=/")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait_for(self, predicate, timeout, what):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for entry in self.log:
                    if predicate(entry):
                        return entry
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{what}; server saw {self.log}")
                self.cond.wait(left)

    def both_cookies(self, entry):
        return (f"a=hdr-{self.token}" in entry[1]) and (f"b=js-{self.token}" in entry[1])

    def close(self):
        self.httpd.shutdown()


class Engines(harness.StackTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.a = cls.stack.mount("host-a")
        cls.b = cls.stack.mount("host-b")

    def engine_env(self, name):
        home = self.stack.scratch(f"home-{name}")
        env = dict(os.environ)
        env.update(HOME=home, XDG_DATA_HOME=os.path.join(home, "data"),
                   XDG_CACHE_HOME=os.path.join(home, "cache"),
                   XDG_CONFIG_HOME=os.path.join(home, "config"),
                   XDG_RUNTIME_DIR=home)
        return env

    def hand_to(self, session, mount):
        reply = af.json_reply(af.assign(self.stack, session, mount.engine_id))
        self.assertTrue(reply["ready"], reply)
        res = af.shim(self.stack, "--timeout", "20s", "wait-ready", session,
                      control=af.control_socket(mount))
        self.assertEqual(res.returncode, 0, res.stderr)
        return reply

    # ---- cog (WPE WebKit)
    def run_cog(self, jar_spec, server, until, what):
        exe = shutil.which("cog")
        if not exe:
            self.fail("cog is not installed (apt-get install --no-install-recommends cog)")
        log_path = os.path.join(self.stack.root, "logs", f"cog-{uuid.uuid4().hex[:6]}.log")
        with open(log_path, "w") as log:
            proc = subprocess.Popen([exe, "--platform=headless", f"--cookie-jar={jar_spec}",
                                     "--cookie-store=always", server.url],
                                    env=self.engine_env("cog"), stdout=log,
                                    stderr=subprocess.STDOUT)
        try:
            try:
                server.wait_for(until, ENGINE_TIMEOUT, what)
            except TimeoutError as exc:
                state = proc.poll()
                self.fail(f"cog: {exc}; cog {'exited ' + str(state) if state is not None else 'ran'}"
                          f"; its output:\n{harness.tail(log_path, 40)}")
            time.sleep(0.5)  # cookies are written on arrival; let the jar settle
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def cog_round_trip(self, session, kind, filename):
        server = CookieServer()
        try:
            self.hand_to(session, self.a)
            jar_a = os.path.join(self.a.session(session), filename)
            self.run_cog(f"{kind}:{jar_a}", server,
                         lambda e: e[0].startswith("/after-js") and f"b=js-{server.token}" in e[1],
                         "cog on A to run the page's script")
            self.assertTrue(os.path.getsize(jar_a) > 0, "cog wrote nothing into the jar")
            self.hand_to(session, self.b)
            jar_b = os.path.join(self.b.session(session), filename)
            server.log.clear()
            entry = self.run_cog(f"{kind}:{jar_b}", server, server.both_cookies,
                                 "cog on B to send both cookies back")
            del entry
            sys.stderr.write(f"[{kind} jar] cookies came back on host B: {server.log}\n")
        finally:
            server.close()

    def test_cog_sqlite_jar(self):
        self.cog_round_trip("cog-sqlite", "sqlite", "cookies.sqlite")

    def test_cog_text_jar(self):
        self.cog_round_trip("cog-text", "text", "cookies.txt")

    # ---- Chromium
    def run_chromium(self, mount, session, server):
        exe = shutil.which("chromium")
        if not exe:
            self.fail("chromium is not installed (apt-get install --no-install-recommends chromium)")
        profile = self.stack.scratch("chromium-profile")
        os.makedirs(os.path.join(profile, "Default"))
        os.symlink(os.path.join(mount.session(session), "Cookies"),
                   os.path.join(profile, "Default", "Cookies"))
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
               "--dump-dom", "--virtual-time-budget=3000", server.url]
        try:
            res = subprocess.run(cmd, env=self.engine_env("chromium"), capture_output=True,
                                 text=True, timeout=ENGINE_TIMEOUT * 2)
        except subprocess.TimeoutExpired:
            self.fail("chromium did not exit within its time budget")
        if res.returncode != 0 or "cookie test" not in res.stdout:
            self.fail(f"chromium failed ({res.returncode}): {res.stderr[-3000:]}")

    def test_chromium(self):
        session = "chromium"
        server = CookieServer()
        try:
            self.hand_to(session, self.a)
            self.run_chromium(self.a, session, server)
            server.wait_for(lambda e: e[0].startswith("/after-js"), 10, "chromium to run the script")
            self.assertTrue(os.path.exists(os.path.join(self.a.session(session), "Cookies")),
                            "chromium wrote no Cookies db into the mount")
            self.hand_to(session, self.b)
            server.log.clear()
            self.run_chromium(self.b, session, server)
            server.wait_for(server.both_cookies, 10, "chromium on B to send both cookies back")
            sys.stderr.write(f"[chromium] cookies came back on host B: {server.log}\n")
        finally:
            server.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
