"""Claims and leases on the journal's rows: take, renew, give back and expire them.

Every function runs on a raw DBAPI connection inside a write transaction the caller began,
and writes its status changes through the :class:`~csvjournal._writer.Writer`, so each one is
an event like any record. A row is *open* when it is not done (not in a terminal status) and
no live lease holds it: :data:`FREE_ROWS` or :data:`LAPSED_ROWS`, the tests shared by
``pending()`` and ``claim()`` so the two agree at every instant. Lease times are epoch seconds.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from csvjournal._writer import IN_PROGRESS, PENDING, RecordOp, Writer

__all__ = [
    "FREE_ROWS",
    "LAPSED_ROWS",
    "Action",
    "claim_rows",
    "defer_rows",
    "expire_leases",
    "extend_leases",
    "leased_to",
    "release_rows",
    "reset_attempts",
]

# An open row is free (no lease) or lapsed (its lease or back-off ran out): the free ones are
# listed in ``free_rows``, the lapsed ones found through the ``rows_leased`` index.
# ``pending()`` and ``claim()`` both ask these two, so they agree at every instant.
# Parameters by number (binding by name costs a claim ~3 µs): ?1 now, ?2 the attempts limit.
FREE_ROWS = "attempts < ?2"
LAPSED_ROWS = "lease_until IS NOT NULL AND lease_until <= ?1 AND done = 0 AND attempts < ?2"
_NO_LIMIT = 2**62

# A claim takes the first ?3 open rows in CSV order: the first rows nobody leases, and the
# first rows whose lease (or back-off) ran out, merged by position (one statement: each
# costs a claim ~10 µs). The lapsed rows are sorted by position only if there are any: an
# empty sort still costs 7 µs.
_OPEN = f"""
SELECT * FROM (
    SELECT pos, key, NULL, NULL FROM free_rows WHERE {FREE_ROWS}
    ORDER BY pos LIMIT ?3
)
UNION ALL
SELECT * FROM (
    SELECT pos, key, holder, lease_until FROM rows INDEXED BY rows_leased WHERE {LAPSED_ROWS}
    ORDER BY pos LIMIT ?3
)
WHERE EXISTS (
    SELECT 1 FROM rows INDEXED BY rows_leased WHERE lease_until IS NOT NULL AND lease_until <= ?1
)
"""
_EXTEND = """
UPDATE rows SET lease_until = ?
WHERE key = ? AND holder = ? AND status = 'IN_PROGRESS' AND done = 0
"""
_HELD = "SELECT 1 FROM rows WHERE key = ? AND holder = ? AND status = 'IN_PROGRESS'"
_GIVE_BACK = "UPDATE rows SET attempts = max(attempts - 1, 0) WHERE key = ?"
# A lease some worker held: a row set IN_PROGRESS by hand during a back-off (defer) keeps
# the back-off's end with no holder, and has no worker to lose.
_EXPIRED = """
SELECT key, holder FROM rows INDEXED BY rows_leased
WHERE lease_until IS NOT NULL AND lease_until <= ? AND status = 'IN_PROGRESS'
    AND holder IS NOT NULL
ORDER BY pos
"""


@dataclass(frozen=True, slots=True)
class Action:
    """A write other than a record (a claim, a release...), run inside a group commit."""

    run: Callable[[sqlite3.Connection, Writer], object]
    # the record it writes, if any (a claimed row's outcome): checked as records are
    op: RecordOp | None = None
    # set: the caller no longer wants it (a work loop told to stop); a group made only of
    # such actions stops waiting for a busy journal once all of theirs are set
    abandon: threading.Event | None = None


def _write(conn: sqlite3.Connection, writer: Writer, ops: Sequence[RecordOp]) -> None:
    if len(ops) == 1 and not writer.numbering:
        writer.apply(conn, ops)  # SQLite numbers a lone event: no max(seq) query
        return
    for op in ops:
        writer.allocate(conn, op)
    if ops:
        writer.apply(conn, ops)


def _numbered(op: RecordOp) -> int:
    assert op.seq is not None  # written: numbered
    return op.seq


_TAKEN_OVER = """
SELECT 1 FROM rows WHERE key = ?1 AND holder IS NOT ?2 AND (done = 1
    OR (status = 'IN_PROGRESS' AND lease_until > ?3))
"""


def record_outcome(
    conn: sqlite3.Connection, writer: Writer, op: RecordOp, worker: str, now: float
) -> int | None:
    """Write ``op``, a claimed row's outcome by ``worker``, unless it comes late and would
    undo another worker's: the row was taken over (its lease ran out) and is finished, or
    another worker's lease holds it at ``now``, and ``op`` would move it to an unfinished
    status (a late ``FAILED`` would end the live lease and offer the row to a third
    worker while the second still works on it). Return its sequence number, or None when
    it was not written."""
    late = op.status is not None and not writer.is_terminal(op.status)
    if late and conn.execute(_TAKEN_OVER, (op.key, worker, now)).fetchone() is not None:
        return None
    _write(conn, writer, [op])
    return op.seq


# Back-offs (``defer``) that ran out: their rows free again, listed in ``free_rows`` (by
# its trigger) once, rather than found and sorted with the lapsed leases at every claim,
# which cost a claim milliseconds per 10,000 such rows.
_BACK_OFFS_OVER = """
UPDATE rows INDEXED BY rows_leased SET lease_until = NULL
WHERE lease_until IS NOT NULL AND lease_until <= ? AND holder IS NULL
"""


def claim_rows(
    conn: sqlite3.Connection,
    writer: Writer,
    *,
    n: int,
    now: float,
    lease: float,
    worker: str,
    at: str,
    max_attempts: int | None,
) -> list[tuple[str, int]]:
    """Take up to ``n`` open rows in CSV order: ``IN_PROGRESS``, leased to ``worker`` until
    ``now + lease``, attempts + 1, an event each. Rows with ``max_attempts`` attempts or more
    are skipped. A row whose lease ran out says in its event whose lease it was. Return
    ``(key, sequence number of its event)`` for each row taken."""
    limit = _NO_LIMIT if max_attempts is None else min(max_attempts, _NO_LIMIT)
    conn.execute(_BACK_OFFS_OVER, (now,))
    found = sorted(conn.execute(_OPEN, (now, limit, n)).fetchall())
    ops = [
        RecordOp(
            key,
            IN_PROGRESS,
            {},
            at,
            worker,
            None if holder is None or until is None else f"lease of {holder} expired",
            lease_until=now + lease,
        )
        for _, key, holder, until in found[:n]
    ]
    _write(conn, writer, ops)  # the row's upsert takes the lease too
    return [(op.key, _numbered(op)) for op in ops]


def extend_leases(
    conn: sqlite3.Connection, held: Sequence[tuple[str, str]], until: float
) -> list[str]:
    """Move the lease of each ``(key, holder)`` still held by that holder to ``until``;
    return the keys renewed (a row another worker took over, or finished, is not)."""
    return [key for key, holder in held if conn.execute(_EXTEND, (until, key, holder)).rowcount]


def release_rows(
    conn: sqlite3.Connection,
    writer: Writer,
    held: Sequence[tuple[str, str]],
    *,
    at: str,
    worker: str,
    note: str,
    counted: bool = False,
) -> list[tuple[str, str, int]]:
    """Give each ``(key, holder)`` row still held by that holder back: ``PENDING``, lease
    ended, and the attempt not counted (it was abandoned, not failed), unless ``counted``
    (its worker died on it, as when its lease runs out). Return ``(key, holder, sequence
    number of its event)`` for each."""
    given = [(key, holder) for key, holder in held if conn.execute(_HELD, (key, holder)).fetchone()]
    ops = [RecordOp(key, PENDING, {}, at, worker, note) for key, _ in given]
    _write(conn, writer, ops)
    if not counted:
        conn.executemany(_GIVE_BACK, [(key,) for key, _ in given])
    return [(key, holder, _numbered(op)) for (key, holder), op in zip(given, ops, strict=True)]


_LEASED_TO = """
SELECT key, holder FROM rows INDEXED BY rows_leased
WHERE lease_until > ? AND status = 'IN_PROGRESS' AND substr(holder, 1, ?) = ?
ORDER BY pos
"""


def leased_to(conn: sqlite3.Connection, prefix: str, now: float) -> list[tuple[str, str]]:
    """``(key, holder)`` of the rows whose live lease a worker named ``prefix...`` holds."""
    found = conn.execute(_LEASED_TO, (now, len(prefix), prefix))
    return [(str(key), str(holder)) for key, holder in found]


_EXPIRING = """
SELECT pos, key, cells FROM rows INDEXED BY rows_leased
WHERE lease_until IS NOT NULL AND lease_until <= ? AND status = 'IN_PROGRESS'
    AND holder IS NOT NULL
ORDER BY pos
"""


def expiring_rows(conn: sqlite3.Connection, now: float) -> list[tuple[int, str, str]]:
    """``(pos, key, cells JSON)`` of the rows :func:`expire_leases` at ``now`` would return
    to ``PENDING`` (as they are before)."""
    return [(int(pos), str(key), str(cells)) for pos, key, cells in conn.execute(_EXPIRING, (now,))]


def expire_leases(
    conn: sqlite3.Connection, writer: Writer, *, now: float, at: str, worker: str
) -> list[tuple[str, str]]:
    """Return every row whose lease ran out to ``PENDING`` with an event naming the lost
    worker; return ``(key, lost worker)`` pairs in CSV order."""
    lost = [(str(key), str(holder)) for key, holder in conn.execute(_EXPIRED, (now,))]
    ops = [
        RecordOp(key, PENDING, {}, at, worker, f"lease of {holder} expired") for key, holder in lost
    ]
    _write(conn, writer, ops)
    return lost


_DEFER = """
UPDATE rows SET lease_until = ?, holder = NULL
WHERE key = ? AND done = 0 AND status != 'IN_PROGRESS'
"""
_RETRY = "UPDATE rows SET attempts = 0 WHERE key = ? AND done = 0"
_RETRY_STATUS = "SELECT key FROM rows WHERE status = ? AND done = 0 AND attempts > 0 ORDER BY pos"


def defer_rows(conn: sqlite3.Connection, keys: Sequence[str], until: float) -> list[str]:
    """Keep the rows ``keys`` (not done, not in progress) out of claims and ``pending()``
    until ``until`` (a retry back-off: a lease nobody holds); return the keys deferred."""
    return [key for key in keys if conn.execute(_DEFER, (until, key)).rowcount]


def reset_attempts(conn: sqlite3.Connection, keys: Sequence[str] | None, status: str) -> list[str]:
    """Give rows a fresh set of attempts: ``keys``, or every not-done row in ``status``
    that has been tried; return the keys reset."""
    if keys is None:
        keys = [key for (key,) in conn.execute(_RETRY_STATUS, (status,))]
    return [key for key in keys if conn.execute(_RETRY, (key,)).rowcount]
