"""A writer process for the crash tests: replays a workload history on a
SQLite jar until it is killed, logging to a side channel outside the mount.

    crash_writer.py PATTERN DB_PATH SIDE_CHANNEL SEED

Side channel lines (O_APPEND, one write each, so a SIGKILL leaves whole lines
of everything written before it): "R" once the db is open, "B i" before
transaction i starts, "A i" after it returned (for synchronous=FULL that is
an fsync-acknowledged commit), "D" when the history ran out.

Single-threaded.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workloads  # noqa: E402


def main():
    pattern, db_path, side_path, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    writer_cls, make_history = workloads.WRITERS[pattern]
    history = make_history(seed)
    side = os.open(side_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    writer = writer_cls(db_path)
    os.write(side, b"R\n")
    for i, txn in enumerate(history):
        os.write(side, f"B {i}\n".encode())
        writer.apply(txn)
        os.write(side, f"A {i}\n".encode())
    writer.close()
    os.write(side, b"D\n")
    return 0


def parse_side_channel(path):
    """(last begun txn index, last acknowledged txn index); -1 when none."""
    begun = acked = -1
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[0] == "B":
                    begun = int(parts[1])
                elif len(parts) == 2 and parts[0] == "A":
                    acked = int(parts[1])
    except FileNotFoundError:
        pass
    return begun, acked


def verify_restored(pattern, seed, db_path, side_path, durable, slack=0):
    """Checks a db restored after a crash: integrity_check ok, content equal
    to the state after exactly k transactions, k <= the last one begun and,
    when `durable`, k covers every acknowledged one but the last `slack`.
    Returns (problem, k): problem is None when all holds, else one line
    saying what broke."""
    writer_cls, make_history = workloads.WRITERS[pattern]
    history = make_history(seed)
    begun, acked = parse_side_channel(side_path)
    lo = max(0, acked + 1 - slack) if durable else 0
    hi = begun + 1
    if not os.path.exists(db_path):
        if lo == 0:
            return None, 0
        return f"db missing, but {acked + 1} transactions were acknowledged", None
    try:
        check = workloads.integrity(db_path)
        state = workloads.read_state(db_path, writer_cls.table)
    except Exception as exc:  # noqa: BLE001 - the report is the result
        return f"cannot open restored db: {exc}", None
    if check != "ok":
        return f"integrity_check: {check[:300]}", None
    k = workloads.matching_prefix(history, state, lo, hi)
    if k is None:
        near = workloads.matching_prefix(history, state, 0, len(history))
        where = f"it equals the state after {near} txns" if near is not None else \
            "it equals no prefix of the history (torn transaction)"
        return (f"content is not a state after k in [{lo}, {hi}] transactions "
                f"(begun={begun}, acked={acked}); {where}"), None
    return None, k


def state_is(pattern, seed, db_path, k):
    """None when the jar at db_path passes integrity_check and holds exactly
    the state after k transactions, else one line saying what it holds."""
    writer_cls, make_history = workloads.WRITERS[pattern]
    history = make_history(seed)
    check = workloads.integrity(db_path)
    if check != "ok":
        return f"integrity_check: {check[:300]}"
    state = workloads.read_state(db_path, writer_cls.table)
    if workloads.matching_prefix(history, state, k, k + 1) == k:
        return None
    near = workloads.matching_prefix(history, state, 0, len(history))
    return f"expected the state after {k} txns, found {near if near is not None else 'none'}"


def write_next(pattern, seed, db_path, k):
    """The new owner's engine carries on: applies transaction k of the
    history (the one after the restored state) to the jar in place."""
    writer_cls, make_history = workloads.WRITERS[pattern]
    writer = writer_cls(db_path)
    try:
        writer.apply(make_history(seed)[k])
    finally:
        writer.close()


if __name__ == "__main__":
    sys.exit(main())
