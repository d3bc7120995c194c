"""Crash consistency: kill the writer together with cookiefs at a random
moment, restore the session on another mount from PostgreSQL, and check
that the database passes PRAGMA integrity_check, equals the state after
exactly k of the writer's transactions, and (synchronous=FULL, Chromium's
pattern) holds every transaction an fsync acknowledged. Then restart the
killed mount on its cache dir and check the same of its local state.

    COOKIEFS_CRASH_TRIALS  number of trials (default 200)
    COOKIEFS_CRASH_SEED    seed of the kill moments (default: random, printed)

Trials alternate libsoup's pattern (synchronous=OFF, rollback journal) and
Chromium's (TRUNCATE journal, synchronous=FULL, mmap). All failures are
collected and reported together with each trial's seed and pattern.
"""

import errno
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
DB_NAME = {"soup": "cookies.sqlite", "chromium": "Cookies"}
# Every 10th trial also checks that the restarted mount's re-commit reaches
# the other mount (push of a recovered session).
RECOMMIT_EVERY = 10


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
        counts = {"soup": 0, "chromium": 0}
        ks = []
        begun_at_kill = []
        started = time.monotonic()
        for trial in range(TRIALS):
            pattern = "soup" if trial % 2 == 0 else "chromium"
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
        begun, _ = crash_writer.parse_side_channel(side)
        self.last_begun = begun
        if begun < 0:
            return f"writer never began a transaction: {err.decode(errors='replace')[-300:]}", 0
        durable = pattern == "chromium"

        # Restore from PostgreSQL on the other mount, which never saw the session.
        restored_dir = self.restorer.session(session)
        local = os.path.join(self.stack.scratch("restored"), session)
        try:
            harness.stable_copy(restored_dir, local)
        except FileNotFoundError:
            os.makedirs(local)  # session not committed yet: allowed when nothing was acked
        except OSError as exc:
            return f"restoring the session failed: {errno.errorcode.get(exc.errno)} {exc}", None
        problem, k = crash_writer.verify_restored(pattern, trial, os.path.join(
            local, DB_NAME[pattern]), side, durable)
        if problem:
            return f"restored from PostgreSQL: {problem}", None

        # The killed mount restarts on its cache dir and must hold a consistent
        # db with at least everything PostgreSQL had.
        self.writer.start()
        problem, k_local = crash_writer.verify_restored(pattern, trial, db, side, durable)
        if problem:
            return f"after restart on the same cache dir: {problem}", None
        if k_local < k:
            return (f"restart on the same cache dir went back in time: {k_local} txns "
                    f"locally, {k} in PostgreSQL"), None
        if trial % RECOMMIT_EVERY == 0 and os.path.exists(db):
            harness.fsync_path(db)  # the local recovery (rollback) is now committed too
            want = harness.session_fingerprint(self.writer.session(session))

            def restorer_sees_recommit():
                harness.stable_copy(restored_dir, local)
                return harness.session_fingerprint(local) == want

            try:
                harness.poll(restorer_sees_recommit, harness.PROPAGATION_DEADLINE,
                             what="the other mount to see the recovered session")
            except TimeoutError as exc:
                return str(exc), None
        return None, k


if __name__ == "__main__":
    unittest.main(verbosity=2)
