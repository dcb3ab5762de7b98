"""A ``batch()`` block's records written in bulk, beside the thread that records them.

A big block spends as long in SQLite as in Python. ``executemany`` releases the GIL for
each row's step only, and a thread waiting to take it back waits out the interpreter's
switch interval (5 ms) while the recording thread runs Python: run in another thread, it
would barely move. So the records' parameters go to SQLite as one JSON object a statement,
and each statement reads them with ``json_each``: one step a statement, the GIL released
for all of it, the rows written while the block's own thread records the next ones.

The statements do what :mod:`csvjournal._writer`'s do, record for record; rows whose
parameters JSON cannot carry as they are (a NUL character: SQLite's JSON functions end a
text there), and runs too small to gain, stay with ``executemany`` in the caller's thread.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence

from csvjournal import _forking
from csvjournal._writer import RecordOp, Writer, runs

__all__ = ["MIN_RUN", "bulk_write"]

# Fewer records a run and the statements' set-up costs more than the overlap gains.
MIN_RUN = 256

_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode

# Each statement reads a JSON object whose members are the records of a run (each row's key
# once), named by their row's key.

# _writer's _INSERT_EVENT: each member an event's number, status, fields and time; its
# worker, note and process ?2-?4, the same for every record of the block's thread.
_INSERT_EVENTS = """
INSERT INTO events (seq, key, status, fields, at, worker, note, pid, prev)
SELECT e->>0, key, coalesce(e->>1, (SELECT status FROM rows WHERE rows.key = j.key), 'PENDING'),
       e->>2, e->>3, ?2, ?3, ?4, (SELECT last FROM rows WHERE rows.key = j.key)
FROM (SELECT key, value AS e FROM json_each(?1)) AS j
"""
# _writer's _UPSERT_ROW for records that set a status (and claim nothing): each member a
# status, the cells of a new row, the event, done. A new row's cells (the key's cell and
# the patch) patch an existing row as the patch alone would: the key's cell holds the key
# already. (WHERE true: an upsert's SELECT needs a WHERE.)
_UPSERT_SETTING_STATUS = """
INSERT INTO rows (key, status, cells, last, done)
SELECT key, r->>0, r->>1, r->>2, r->>3
FROM (SELECT key, value AS r FROM json_each(?1)) WHERE true
ON CONFLICT (key) DO UPDATE SET
    status = excluded.status,
    done = excluded.done,
    cells = json_patch(cells, excluded.cells),
    last = excluded.last,
    line = NULL,
    lease_until = CASE WHEN excluded.status = 'IN_PROGRESS' THEN lease_until END,
    holder = CASE WHEN excluded.status = 'IN_PROGRESS' THEN holder END
"""
# ... and for records that leave the status as it is (no status in a member): a new row's
# cells hold PENDING in the status's cell (?2 the JSON path of that cell), which an
# existing row's keep.
_UPSERT_KEEPING_STATUS = """
INSERT INTO rows (key, status, cells, last, done)
SELECT key, 'PENDING', r->>0, r->>1, r->>2
FROM (SELECT key, value AS r FROM json_each(?1)) WHERE true
ON CONFLICT (key) DO UPDATE SET
    cells = json_patch(cells, json_remove(excluded.cells, ?2)),
    last = excluded.last,
    line = NULL
"""


def bulk_write(
    writer: Writer,
    conn: sqlite3.Connection,
    ops: Sequence[RecordOp],
    idle: Callable[[], None],
) -> Callable[[], None] | None:
    """What writes ``ops`` (each :meth:`~Writer.allocate`\\ d, none a claim) to ``conn``
    in bulk, to be called in any one thread while nothing else uses ``conn``; ``None``
    when :meth:`Writer.apply` in the caller's thread is the better way. The parameters are
    made now, in the caller's thread; ``idle`` is called first, to wait until nothing uses
    ``conn``, when the journal must be asked for a column (a new field's is added to it)."""
    chunks = [_parts(run) for run in runs(ops)]
    if any(len(part) < MIN_RUN for parts in chunks for part in parts):
        return None
    if any(op.lease_until is not None or op.note is not None for op in ops):
        return None
    if len({op.worker for op in ops}) > 1:
        return None
    known = writer.columns.index
    if not writer.cells_known or any(name not in known for op in ops for name in op.fields):
        idle()
    path = f'$."{writer.status_cell(conn)}"'
    statements: list[tuple[str, tuple[object, ...]]] = []
    for parts in chunks:
        events: dict[str, tuple[object, ...]] = {}
        for part in parts:
            rows: dict[str, tuple[object, ...]] = {}
            for op in part:
                (seq, _, status, fields, at, *_), upsert = writer.params(conn, op)
                events[op.key] = (seq, status, fields, at)
                cells, done = upsert[3], upsert[5]
                rows[op.key] = (cells, seq, done) if status is None else (status, cells, seq, done)
            if part[0].status is None:
                statements.append((_UPSERT_KEEPING_STATUS, (_ENCODE(rows), path)))
            else:
                statements.append((_UPSERT_SETTING_STATUS, (_ENCODE(rows),)))
        shared = ops[0].worker, None, _forking.PID
        statements.insert(
            len(statements) - len(parts), (_INSERT_EVENTS, (_ENCODE(events), *shared))
        )
    if any("\\u0000" in params[0] for _, params in statements):  # type: ignore[operator]
        return None  # (or a backslash and "u0000" in a value: executemany writes it too)

    def write() -> None:
        for sql, params in statements:
            conn.execute(sql, params)

    return write


def _parts(run: Sequence[RecordOp]) -> list[Sequence[RecordOp]]:
    """A run cut where records that set a status and records that keep it take turns:
    each part takes its own upsert, the parts in order (a new row's place in the CSV is
    the order its first record came in)."""
    parts: list[Sequence[RecordOp]] = []
    start = 0
    for index in range(1, len(run) + 1):
        if index == len(run) or (run[index].status is None) != (run[start].status is None):
            parts.append(run[start:index])
            start = index
    return parts
