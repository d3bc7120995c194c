"""Many sessions moved back and forth between two mounts under writes: every
session's content on its new owner equals the last write its old owner
acknowledged (compared by SHA-256), after every one of the moves."""

import concurrent.futures
import errno
import hashlib
import json
import os
import random
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import affinity_stack as af  # noqa: E402
from affinity_stack import harness  # noqa: E402

SESSIONS = int(os.environ.get("COOKIEFS_AFFINITY_SESSIONS", "100"))
MOVES = int(os.environ.get("COOKIEFS_AFFINITY_MOVES", "10"))
JAR = 2048


class ManyMoves(harness.StackTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.hosts = [cls.stack.mount("host-a"), cls.stack.mount("host-b")]

    def move_session(self, n):
        session = f"many-{n:03d}"
        rng = random.Random(n)
        owner = self.hosts[n % 2]
        af.assign(self.stack, session, owner.engine_id)
        res = af.shim(self.stack, "--timeout", "30s", "wait-ready", session,
                      control=af.control_socket(owner))
        if res.returncode != 0:
            return f"{session}: wait-ready failed: {res.stderr.strip()}"
        for move in range(MOVES):
            target = self.hosts[(n + move + 1) % 2]
            path = os.path.join(owner.session(session), "cookies.sqlite")
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            acked = None
            try:
                for _ in range(rng.randint(1, 5)):
                    data = rng.randbytes(JAR)
                    os.pwrite(fd, data, 0)
                    acked = data
            finally:
                os.close(fd)
            res = af.assign(self.stack, session, target.engine_id, check=False)
            if res.returncode != 0:
                return f"{session} move {move}: assign failed: {res.stderr.strip()}"
            reply = af.json_reply(res)
            if not (reply["drained"] and reply["ready"]):
                return f"{session} move {move}: {reply}"
            got = harness.read_bytes(os.path.join(target.session(session), "cookies.sqlite"))
            if hashlib.sha256(got).digest() != hashlib.sha256(acked).digest():
                return (f"{session} move {move}: content hash on the new owner differs from "
                        f"the old owner's last acknowledged write")
            try:
                harness.write_bytes(path, b"too late")
                return f"{session} move {move}: the old owner still accepts writes"
            except OSError as exc:
                if exc.errno != errno.EROFS:
                    return f"{session} move {move}: old owner write: {exc}"
            owner = target
        return None

    def test_sessions_move_back_and_forth(self):
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            problems = [p for p in pool.map(self.move_session, range(SESSIONS)) if p]
        self.assertEqual(problems, [], "\n".join(problems[:20]))


if __name__ == "__main__":
    unittest.main(verbosity=2)
