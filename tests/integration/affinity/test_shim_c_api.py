"""The engine-shim C API (a C program compiled in the build) against two real
mounts: assign, wait_ready, flush, status, release and the fencing rules; and
a short hand-off latency run (printed, never asserted). Set
COOKIEFS_HANDOFF_N=1000 for the full measurement."""

import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import affinity_stack as af  # noqa: E402
from affinity_stack import harness  # noqa: E402


class ShimCApi(harness.StackTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.a = cls.stack.mount("host-a")
        cls.b = cls.stack.mount("host-b")

    def run_program(self, mode, session, *extra):
        exe = os.path.join(harness.BUILD_DIR, "tests", "integration", "affinity", "shim_handoff")
        cmd = [exe, mode, f"127.0.0.1:{self.stack.storage_port}", af.control_socket(self.a),
               af.control_socket(self.b), self.a.path, self.b.path, session, self.a.engine_id,
               self.b.engine_id, *extra]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=1800)

    def test_c_api_handoff(self):
        res = self.run_program("check", "c-api")
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)

    def test_handoff_latency(self):
        n = os.environ.get("COOKIEFS_HANDOFF_N", "50")
        res = self.run_program("latency", "latency", n, str(64 * 1024))
        sys.stderr.write(res.stdout)
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
