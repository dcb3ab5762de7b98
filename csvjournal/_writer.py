"""Applying records to the journal: the hot path under ``record()`` and ``batch()``.

Runs on a raw DBAPI connection inside a write transaction that the caller began (group
commit or batch). SQLAlchemy statement building costs more than a whole record here, so the
statements are plain SQL over the tables of :mod:`csvjournal._schema`; every value is a
bound parameter, and column names live only in the ``columns`` table, never in SQL text.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["ColumnCache", "RecordOp", "Writer"]

PENDING = "PENDING"
IN_PROGRESS = "IN_PROGRESS"

# Events go in before the upserts of their run so the subquery sees each row's state
# before this record: its status (when the record keeps it) and its last event (``prev``).
_INSERT_EVENT = """
INSERT INTO events (seq, key, status, fields, at, worker, pid, note, prev)
SELECT ?1, ?2, coalesce(?3, r.status, 'PENDING'), ?4, ?5, ?6, ?7, ?8, r.last_seq
FROM (SELECT ?2 AS k) AS q LEFT JOIN rows AS r ON r.key = q.k
"""
# A status other than IN_PROGRESS ends any lease on the row.
_UPSERT_ROW = """
INSERT INTO rows (key, status, cells, last_seq)
VALUES (?1, coalesce(?2, 'PENDING'), ?3, ?5)
ON CONFLICT (key) DO UPDATE SET
    status = coalesce(?2, status),
    cells = json_patch(cells, ?4),
    last_seq = ?5,
    lease_until = CASE WHEN ?2 IS NULL OR ?2 = 'IN_PROGRESS' THEN lease_until END,
    holder = CASE WHEN ?2 IS NULL OR ?2 = 'IN_PROGRESS' THEN holder END
"""


@dataclass(slots=True)
class RecordOp:
    """One validated ``record()`` call: every value already rendered to text."""

    key: str
    status: str | None
    fields: dict[str, str]
    at: str
    worker: str
    pid: int
    note: str | None = None
    seq: int = 0


@dataclass(slots=True)
class ColumnCache:
    """The CSV's columns in order, as this handle last saw them in the journal."""

    names: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)

    def load(self, conn: sqlite3.Connection) -> None:
        """Reload every column name from the journal."""
        self.names = [name for (name,) in conn.execute("SELECT name FROM columns ORDER BY pos")]
        self.index = {name: pos for pos, name in enumerate(self.names)}

    def truncate(self, length: int) -> None:
        """Forget columns added after the first ``length`` (their transaction rolled back)."""
        for name in self.names[length:]:
            del self.index[name]
        del self.names[length:]

    def position(self, conn: sqlite3.Connection, name: str) -> int:
        """Return the position of column ``name``, appending it to the CSV if new."""
        pos = self.index.get(name)
        if pos is None:
            pos = len(self.names)
            conn.execute("INSERT INTO columns (pos, name) VALUES (?, ?)", (pos, name))
            self.names.append(name)
            self.index[name] = pos
        return pos


class Writer:
    """Turns :class:`RecordOp` into rows and events inside the caller's transaction."""

    def __init__(self, key_column: str, status_column: str, timestamp_column: str) -> None:
        self.columns = ColumnCache()
        self._key_column = key_column
        self._status_column = status_column
        self._timestamp_column = timestamp_column
        self._next_seq = 1

    def start(self, conn: sqlite3.Connection) -> int:
        """Sync with the journal at the start of a write transaction; return the column mark.

        Columns only ever append, so an unchanged count means the cache is current.
        """
        count, last_seq = conn.execute(
            "SELECT (SELECT count(*) FROM columns), (SELECT coalesce(max(seq), 0) FROM events)"
        ).fetchone()
        if count != len(self.columns.names):
            self.columns.load(conn)
        self._next_seq = last_seq + 1
        return count  # type: ignore[no-any-return]

    def allocate(self, op: RecordOp) -> int:
        """Give ``op`` the next sequence number of this transaction."""
        op.seq = self._next_seq
        self._next_seq += 1
        return op.seq

    def mark(self) -> tuple[int, int]:
        """A savepoint's view of this writer's state."""
        return len(self.columns.names), self._next_seq

    def restore(self, mark: tuple[int, int]) -> None:
        """Undo the in-memory effects of what a rolled-back savepoint or transaction did."""
        self.columns.truncate(mark[0])
        self._next_seq = mark[1]

    def apply(self, conn: sqlite3.Connection, ops: Sequence[RecordOp]) -> None:
        """Write ``ops`` (sequence numbers already allocated), in order."""
        start = 0
        seen: set[str] = set()
        for index, op in enumerate(ops):
            if op.key in seen:  # a run holds each key once; see _INSERT_EVENT
                self._apply_run(conn, ops[start:index])
                start, seen = index, set()
            seen.add(op.key)
        self._apply_run(conn, ops[start:])

    def _apply_run(self, conn: sqlite3.Connection, ops: Sequence[RecordOp]) -> None:
        events = []
        upserts = []
        position = self.columns.position
        key_pos = position(conn, self._key_column)
        status_pos = position(conn, self._status_column)
        stamp_pos = position(conn, self._timestamp_column)
        for op in ops:
            patch = {str(stamp_pos): op.at}
            for name, value in op.fields.items():
                patch[str(position(conn, name))] = value
            if op.status is not None:
                patch[str(status_pos)] = op.status
            patch_json = json.dumps(patch, ensure_ascii=False)
            new_cells = dict(patch)
            new_cells[str(key_pos)] = op.key
            new_cells.setdefault(str(status_pos), PENDING)
            events.append(
                (
                    op.seq,
                    op.key,
                    op.status,
                    json.dumps(op.fields, ensure_ascii=False),
                    op.at,
                    op.worker,
                    op.pid,
                    op.note,
                )
            )
            upserts.append(
                (op.key, op.status, json.dumps(new_cells, ensure_ascii=False), patch_json, op.seq)
            )
        conn.executemany(_INSERT_EVENT, events)
        conn.executemany(_UPSERT_ROW, upserts)
