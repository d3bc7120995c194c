"""Crash hand-off: kill the writer together with its cookiefs at a random
moment (the engine host dies), then do what the network manager and the
next engine do: assign the session to another host (`cookiefs-shim
assign`), open the jar *in place* on that host's mount with SQLite (which
rolls a hot journal back through the mount), check PRAGMA integrity_check,
that the content equals the state after exactly k of the writer's
transactions and (synchronous=FULL) that k covers every transaction an
fsync acknowledged, then write and commit one more transaction there.
Finally the dead host's mount restarts on its cache dir and must converge
on the new owner's state (its own stale copy fenced, never written back).

    COOKIEFS_CRASH_TRIALS  number of trials (default 200)
    COOKIEFS_CRASH_SEED    seed of the kill moments (default: random, printed)

Trials cycle through libsoup's pattern (synchronous=OFF, rollback journal),
libsoup's statements with synchronous=FULL (the last acknowledged
transaction may roll back: SQLite never syncs its commit point, the
journal's unlink, at FULL), Chromium's (TRUNCATE journal, synchronous=FULL,
mmap) and libsoup's with synchronous=EXTRA (every acknowledged transaction). All failures are collected and reported
together with each trial's seed and pattern.
"""

import os
import random
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crash_writer  # noqa: E402
import harness  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TRIALS = int(os.environ.get("COOKIEFS_CRASH_TRIALS", "200"))
SEED = int(os.environ.get("COOKIEFS_CRASH_SEED", str(random.randrange(1 << 30))))
PATTERNS = ("soup", "soup-full", "chromium", "soup-extra")
DB_NAME = {"soup": "cookies.sqlite", "soup-full": "cookies.sqlite", "soup-extra": "cookies.sqlite",
           "chromium": "Cookies"}
# Acknowledged transactions a pattern may lose by SQLite's own rules: at
# synchronous=FULL in DELETE mode the commit point (the journal's unlink) is
# never synced, so the last one may roll back -- as on a local disk.
SLACK = {"soup-full": 1}
# What the NM gives a dead owner to drain before moving the session anyway.
GRACE = "300ms"


class CrashConsistency(harness.StackTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.writer = cls.stack.mount("writer")
        cls.restorer = cls.stack.mount("restorer")

    def test_kill_writer_and_mount_at_random_moments(self):
        print(f"crash test: {TRIALS} trials, COOKIEFS_CRASH_SEED={SEED}", file=sys.stderr)
        rng = random.Random(SEED)
        problems = []
        counts = {p: 0 for p in PATTERNS}
        ks = []
        begun_at_kill = []
        started = time.monotonic()
        for trial in range(TRIALS):
            pattern = PATTERNS[trial % len(PATTERNS)]
            delay = rng.uniform(0.0, 0.35)
            try:
                problem, k = self.trial(trial, pattern, delay)
            finally:
                # A trial that ended early must not leave the next one a dead mount.
                if self.writer.proc.poll() is not None:
                    self.writer.start()
            counts[pattern] += 1
            if problem:
                problems.append(f"trial {trial} ({pattern}, kill after {delay * 1000:.0f} ms): "
                                f"{problem}")
                if len(problems) >= 20:
                    break
            else:
                ks.append(k)
                begun_at_kill.append(self.last_begun)
        elapsed = time.monotonic() - started
        print(f"crash test: {sum(counts.values())} trials in {elapsed:.0f}s, "
              f"restored k: min {min(ks, default=0)}, max {max(ks, default=0)}",
              file=sys.stderr)
        if problems:
            self.fail(f"{len(problems)} failing trial(s) (COOKIEFS_CRASH_SEED={SEED}):\n" +
                      "\n".join(problems))
        # The kills must land inside the workload, else the test proves nothing.
        # (Counted by what the writer had begun, not by what PostgreSQL had:
        # without fsync, libsoup's pattern legitimately commits up to
        # commit.max_lag later, so the restored k of those trials is often 0.)
        self.assertGreater(sum(1 for b in begun_at_kill if b >= 2), len(begun_at_kill) // 2,
                           "most kills happened before the writer got going")

    def trial(self, trial, pattern, delay):
        session = f"crash-{trial:04d}"
        os.mkdir(self.writer.session(session))
        db = os.path.join(self.writer.session(session), DB_NAME[pattern])
        side = os.path.join(self.stack.scratch("side"), "side")
        writer = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "crash_writer.py"), pattern, db, side,
             str(trial)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            # Start the random delay once the writer is under way (two
            # transactions begun), so that a loaded machine's slow start-up
            # does not turn most trials into kills before the first write.
            harness.poll(lambda: writer.poll() is not None or
                         crash_writer.parse_side_channel(side)[0] >= 1, 60,
                         what="the writer to begin its transactions")
            time.sleep(delay)
        finally:
            # Power loss of the host: the mount and the engine die together.
            self.writer.proc.send_signal(signal.SIGKILL)
            writer.send_signal(signal.SIGKILL)
            _, err = writer.communicate()
            self.writer.kill9()
        begun, acked = crash_writer.parse_side_channel(side)
        self.last_begun = begun
        if begun < 0:
            return f"writer never began a transaction: {err.decode(errors='replace')[-300:]}", 0
        durable = pattern != "soup"

        # The network manager moves the session to the other host, which
        # never saw it; the dead owner cannot drain, so this takes the grace.
        try:
            reply = harness.assign(self.stack, session, self.restorer.engine_id, grace=GRACE)
        except AssertionError as exc:
            return str(exc), None
        if not reply.get("ready"):
            return f"assign did not report the session ready on the new owner: {reply}", None
        restored = self.restorer.session(session)
        if not os.path.isdir(restored):
            # The session's creation never reached PostgreSQL: allowed only
            # when nothing was acknowledged. The engine makes its directory.
            if durable and acked >= 0:
                return f"session missing on the new owner, but {acked + 1} txns were acked", None
            os.mkdir(restored)

        # The next engine opens the jar in place (rolling back a hot journal
        # through the mount) and carries on with one more transaction.
        db = os.path.join(restored, DB_NAME[pattern])
        problem, k = crash_writer.verify_restored(pattern, trial, db, side, durable,
                                                  SLACK.get(pattern, 0))
        if problem:
            return f"opened in place on the new owner: {problem}", None
        try:
            crash_writer.write_next(pattern, trial, db, k)
            harness.fsync_path(db)
        except Exception as exc:  # noqa: BLE001 - the report is the result
            return f"writing on the new owner after the hand-off failed: {exc!r}", None
        problem = crash_writer.state_is(pattern, trial, db, k + 1)
        if problem:
            return f"after one more transaction on the new owner: {problem}", None

        # The dead host comes back on its cache dir: its stale copy is fenced
        # and it converges on what the new owner committed.
        self.writer.start()
        want = harness.session_fingerprint(
            harness.stable_copy(restored, os.path.join(self.stack.scratch("want"), session)))
        local = os.path.join(self.stack.scratch("old-owner"), session)

        def old_owner_converged():
            harness.stable_copy(self.writer.session(session), local)
            return harness.session_fingerprint(local) == want

        try:
            harness.poll(old_owner_converged, harness.PROPAGATION_DEADLINE,
                         what="the restarted old owner to converge on the new owner's state")
        except TimeoutError as exc:
            return str(exc), None
        return None, k


if __name__ == "__main__":
    unittest.main(verbosity=2)
