"""What engines do to a cookie jar, as deterministic, replayable workloads.

A workload is a list of transactions; each transaction is a list of ops
("put", name, value) or ("del", name). `states(history)` gives the jar's
expected content after every prefix, so a checker can tell whether a
database restored after a crash equals the state after exactly k
transactions for some k (atomicity) and whether k covers every transaction
the writer saw acknowledged (durability).

Writers reproduce each engine's SQLite usage (measured with strace, see
/work/shared/notes/engines.md):
- SoupDbWriter: libsoup's jar: synchronous=OFF, secure_delete, rollback
  journal (DELETE mode), every statement its own autocommit transaction;
  a replaced cookie is DELETE + INSERT (two transactions).
- SoupFullWriter: the same with synchronous=FULL (fdatasync of journal and
  db per transaction). The commit point, the journal's unlink, is not
  synced at FULL (SQLite documents this for DELETE mode, on any disk), so
  the last acknowledged transaction may roll back after a crash.
- SoupExtraWriter: synchronous=EXTRA, which also syncs the directory after
  the unlink: every acknowledged transaction is durable.
- ChromiumWriter: journal_mode=TRUNCATE, synchronous=FULL (fdatasync of
  journal and db), reads through a read-only shared mmap (PRAGMA mmap_size),
  several changes batched per transaction.
- WalWriter: journal_mode=WAL, synchronous=FULL, with checkpoints.

Text jars (libsoup's cookies.txt): rewrite in place with O_TRUNC, append
with O_APPEND, and the write-to-temp-then-rename variant.

Pure functions and single-connection writers; not thread-safe.
"""

import os
import random
import sqlite3

SCHEMA_TXN = [("schema",)]

# ---------------------------------------------------------------- histories


def cookie_value(rng, txn_index):
    # Long enough that a few hundred cookies span many pages, unique per txn so
    # that no two prefixes of a history have the same state.
    return f"v{txn_index}-" + rng.choice("abcdefghijklmnop") * rng.randint(40, 240)


def soup_history(seed, initial=40, replaces=3000):
    """libsoup: schema, `initial` inserts, then replace = delete + insert."""
    rng = random.Random(seed)
    txns = [SCHEMA_TXN]
    names = [f"c{i:04d}" for i in range(initial)]
    for name in names:
        txns.append([("put", name, cookie_value(rng, len(txns)))])
    for _ in range(replaces):
        name = rng.choice(names)
        txns.append([("del", name)])
        txns.append([("put", name, cookie_value(rng, len(txns)))])
    return txns


def batched_history(seed, initial=60, batches=3000):
    """Chromium-like: schema, one big initial batch, then batches of 1-6
    adds/updates/deletes in one transaction each."""
    rng = random.Random(seed)
    txns = [SCHEMA_TXN]
    live = []
    first = []
    for i in range(initial):
        name = f"c{i:04d}"
        live.append(name)
        first.append(("put", name, cookie_value(rng, 1)))
    txns.append(first)
    next_name = initial
    for _ in range(batches):
        batch, touched = [], set()
        for _ in range(rng.randint(1, 6)):
            kind = rng.random()
            if kind < 0.2 or not live:
                name = f"c{next_name:04d}"
                next_name += 1
                live.append(name)
                batch.append(("put", name, cookie_value(rng, len(txns))))
            else:
                name = rng.choice(live)
                if name in touched:
                    continue
                touched.add(name)
                if kind < 0.35:
                    live.remove(name)
                    batch.append(("del", name))
                else:
                    batch.append(("put", name, cookie_value(rng, len(txns))))
        txns.append(batch)
    return txns


def apply_txn(state, txn):
    """The state after txn, from the state before (None = no table yet)."""
    if txn == SCHEMA_TXN:
        return {} if state is None else state
    new = dict(state)
    for op in txn:
        if op[0] == "put":
            new[op[1]] = op[2]
        else:
            new.pop(op[1], None)
    return new


def states(history, upto=None):
    """[state after 0 txns (None), after 1, ...] up to `upto` txns."""
    out = [None]
    for txn in history[: upto if upto is not None else len(history)]:
        out.append(apply_txn(out[-1], txn))
    return out


def matching_prefix(history, state, lo, hi):
    """The k in [lo, hi] whose expected state equals `state`, or None."""
    hi = min(hi, len(history))
    expected = states(history, hi)
    for k in range(max(lo, 0), hi + 1):
        if expected[k] == state:
            return k
    return None


def final_state(history):
    return states(history)[-1]


# ---------------------------------------------------------------- SQLite


def integrity(path):
    """PRAGMA integrity_check of the db at path (read-write open: a hot
    journal is rolled back first, like the next engine start would)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()
    return "; ".join(r[0] for r in rows)


def read_state(path, table="moz_cookies", readonly=False):
    """{name: value} of the jar at path; None when the table does not exist."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    else:
        conn = sqlite3.connect(path, isolation_level=None)
    try:
        exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                              (table,)).fetchone()
        if not exists:
            return None
        return dict(conn.execute(f"SELECT name, value FROM {table}").fetchall())
    finally:
        conn.close()


class SoupDbWriter:
    """libsoup's SQLite cookie jar usage."""

    table = "moz_cookies"
    synchronous = "OFF"

    def __init__(self, path):
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        self.conn.execute("PRAGMA secure_delete = 1")

    def apply(self, txn):
        c = self.conn
        for op in txn:
            if op[0] == "schema":
                c.execute("CREATE TABLE IF NOT EXISTS moz_cookies (id INTEGER PRIMARY KEY, "
                          "name TEXT, value TEXT, host TEXT, path TEXT, expiry INTEGER, "
                          "lastAccessed INTEGER, isSecure INTEGER, isHttpOnly INTEGER, "
                          "sameSite INTEGER)")
            elif op[0] == "put":
                # soup_history writes a replace as ("del") then ("put"): two
                # autocommit transactions, as libsoup does.
                c.execute("INSERT INTO moz_cookies VALUES(NULL, ?, ?, 'example.test', '/', "
                          "2000000000, 1700000000, 0, 1, 1)", (op[1], op[2]))
            else:
                c.execute("DELETE FROM moz_cookies WHERE name=? AND host=? AND path=?",
                          (op[1], "example.test", "/"))

    def close(self):
        self.conn.close()


class SoupFullWriter(SoupDbWriter):
    """libsoup's statements with synchronous=FULL: every autocommit
    transaction fdatasyncs its journal and the db, so each one the writer
    saw return is acknowledged."""

    synchronous = "FULL"


class SoupExtraWriter(SoupDbWriter):
    """libsoup's statements with synchronous=EXTRA (the journal's unlink is
    followed by an fsync of the directory)."""

    synchronous = "EXTRA"


class ChromiumWriter:
    """Chromium's cookie store usage: TRUNCATE journal, synchronous=FULL,
    mmap reads, batched transactions."""

    table = "cookies"
    journal_mode = "truncate"

    def __init__(self, path):
        self.conn = sqlite3.connect(path, isolation_level=None)
        mode = self.conn.execute(f"PRAGMA journal_mode = {self.journal_mode}").fetchone()[0]
        if mode.lower() != self.journal_mode:
            raise RuntimeError(f"journal_mode {self.journal_mode} refused: got {mode}")
        self.conn.execute("PRAGMA synchronous = FULL")
        self.conn.execute("PRAGMA mmap_size = 268435456")
        self.conn.execute("PRAGMA cache_size = 32")  # small: later reads hit the mmap

    def apply(self, txn):
        c = self.conn
        if txn == SCHEMA_TXN:
            c.execute("CREATE TABLE IF NOT EXISTS cookies (creation_utc INTEGER NOT NULL, "
                      "host_key TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL, "
                      "path TEXT NOT NULL, expires_utc INTEGER NOT NULL, "
                      "UNIQUE (host_key, name, path))")
            return
        c.execute("BEGIN")
        try:
            for op in txn:
                if op[0] == "put":
                    c.execute("INSERT OR REPLACE INTO cookies VALUES(13300000000000000, "
                              "'.example.test', ?, ?, '/', 13400000000000000)", (op[1], op[2]))
                else:
                    c.execute("DELETE FROM cookies WHERE host_key='.example.test' AND name=?",
                              (op[1],))
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        # Chromium reads back (through the mmap) between writes.
        c.execute("SELECT count(*), sum(length(value)) FROM cookies").fetchone()

    def close(self):
        self.conn.close()


class WalWriter(ChromiumWriter):
    journal_mode = "wal"

    def checkpoint(self):
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()


WRITERS = {"soup": (SoupDbWriter, soup_history), "soup-full": (SoupFullWriter, soup_history),
           "soup-extra": (SoupExtraWriter, soup_history),
           "chromium": (ChromiumWriter, batched_history),
           "wal": (WalWriter, batched_history)}


def run_sqlite(pattern, path, history):
    writer_cls, _ = WRITERS[pattern]
    w = writer_cls(path)
    try:
        for i, txn in enumerate(history):
            w.apply(txn)
            if pattern == "wal" and i == len(history) // 2:
                w.checkpoint()
    finally:
        w.close()
    return final_state(history)


# ---------------------------------------------------------------- text jars


def netscape_line(name, value, expiry=2000000000):
    return f".example.test\tTRUE\t/\tFALSE\t{expiry}\t{name}\t{value}\n"


def text_jar_bytes(state):
    return ("# HTTP Cookie File\n" + "".join(
        netscape_line(n, v) for n, v in sorted(state.items()))).encode()


def text_rewrite(path, state):
    """libsoup's replace: truncate and rewrite the jar in place."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        data = text_jar_bytes(state)
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


def text_append(path, name, value):
    """libsoup's add: one line appended with O_APPEND."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, netscape_line(name, value).encode())
    finally:
        os.close(fd)


def text_replace_by_rename(path, state, fsync=False):
    """Write a temp file next to the jar, then rename it over the jar."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text_jar_bytes(state))
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def run_text_jar(path, seed, rounds=30):
    """Mixed appends and in-place rewrites; returns the expected final bytes."""
    rng = random.Random(seed)
    state = {}
    text_rewrite(path, state)
    for i in range(rounds):
        if rng.random() < 0.6:
            name, value = f"t{i:03d}", cookie_value(rng, i)
            text_append(path, name, value)
            state[name] = value
            # An append keeps the order of lines; rewrites sort. Track the bytes.
        else:
            if state:
                victim = rng.choice(sorted(state))
                del state[victim]
            text_rewrite(path, state)
    # Recompute the exact bytes: replay against a local buffer.
    return _replay_text_bytes(seed, rounds)


def _replay_text_bytes(seed, rounds):
    rng = random.Random(seed)
    state = {}
    data = text_jar_bytes(state)
    for i in range(rounds):
        if rng.random() < 0.6:
            name, value = f"t{i:03d}", cookie_value(rng, i)
            data += netscape_line(name, value).encode()
            state[name] = value
        else:
            if state:
                victim = rng.choice(sorted(state))
                del state[victim]
            data = text_jar_bytes(state)
    return data
