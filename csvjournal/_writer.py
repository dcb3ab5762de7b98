"""Applying records to the journal: the hot path under ``record()`` and ``batch()``.

Runs on a raw DBAPI connection inside a write transaction that the caller began (group
commit or batch). SQLAlchemy statement building costs more than a whole record here, so the
statements are plain SQL over the tables of :mod:`csvjournal._schema`; every value is a
bound parameter, and column names live only in the ``columns`` table, never in SQL text.
A single record costs what hand-written SQLite costs: one event insert, one row upsert.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _quote  # C; json.dumps costs 3x more
from typing import TYPE_CHECKING

from csvjournal import _forking
from csvjournal._values import render_value, timestamp_now
from csvjournal.errors import RecordError

if TYPE_CHECKING:
    from csvjournal._settings import Settings

__all__ = [
    "IN_PROGRESS",
    "PENDING",
    "ColumnCache",
    "RecordCall",
    "RecordOp",
    "Writer",
    "prepare_record",
    "runs",
]

# What another handle's open may change while this one is open.
_SHARED_SETTINGS = """
SELECT (SELECT value FROM settings WHERE name = 'terminal'),
       (SELECT value FROM settings WHERE name = 'formula_guard')
"""

PENDING = "PENDING"
IN_PROGRESS = "IN_PROGRESS"

# An event keeps the row's status after it; when the record leaves the status alone, that is
# the row's current one (looked up only then: coalesce stops at the first non-NULL).
# ?1 NULL lets SQLite number the event (max + 1). The event links to the row's newest one
# before it (the row's upsert comes after the event and makes this event its newest).
_INSERT_EVENT = """
INSERT INTO events (seq, key, status, fields, at, worker, note, pid, prev)
VALUES (?1, ?2, coalesce(?3, (SELECT status FROM rows WHERE key = ?2), 'PENDING'),
        ?4, ?5, ?6, ?7, ?8, (SELECT last FROM rows WHERE key = ?2))
"""
# A new row's cells are the patch plus its key and PENDING status (?4); ?5 is the event.
# A status other than IN_PROGRESS ends any lease on the row.
# ?6 says whether the new status is terminal.
# A claim (?7, the lease's end, not NULL) also leases the row to ?8 and counts an attempt.
_UPSERT_ROW = """
INSERT INTO rows (key, status, cells, last, done)
VALUES (?1, coalesce(?2, 'PENDING'), ?4, ?5, ?6)
ON CONFLICT (key) DO UPDATE SET
    status = coalesce(?2, status),
    done = CASE WHEN ?2 IS NULL THEN done ELSE ?6 END,
    cells = json_patch(cells, ?3),
    last = ?5,
    line = NULL,
    lease_until = CASE WHEN ?7 IS NOT NULL THEN ?7
        WHEN ?2 IS NULL OR ?2 = 'IN_PROGRESS' THEN lease_until END,
    holder = CASE WHEN ?7 IS NOT NULL THEN ?8
        WHEN ?2 IS NULL OR ?2 = 'IN_PROGRESS' THEN holder END,
    attempts = attempts + (?7 IS NOT NULL)
"""


@dataclass(slots=True)
class RecordCall:
    """A ``record()`` call's arguments as given, not yet validated (see
    :func:`prepare_record`). A group commit's leader validates its group's calls in one
    loop: run by each caller right after it was woken, the same code ran 3-4 times slower
    (cold caches), and a group's callers come back one after another under the GIL."""

    key: object
    status: object
    fields: Mapping[str, object] | None
    more: Mapping[str, object]
    worker: str


@dataclass(slots=True)
class RecordOp:
    """One validated ``record()`` call: every value already rendered to text."""

    key: str
    status: str | None
    fields: dict[str, str]
    at: str
    worker: str
    note: str | None = None
    seq: int | None = None
    lease_until: float | None = None  # a claim: the row is leased to ``worker`` until then


def prepare_record(settings: Settings, call: RecordCall, at: str | None = None) -> RecordOp:
    """Validate one ``record()`` call and render its values to text; stamp it ``at`` (a
    :func:`~csvjournal._values.timestamp_now`), or now.

    Raises:
        TypeError: a value of an unsupported type, or ``fields`` not a mapping.
        RecordError: an empty key, field name or status, fields contradicting the key, a
            value for the timestamp column (record() stamps it), or text the CSV's
            encoding cannot write.
    """
    s = settings
    key, status, fields, more = call.key, call.status, call.fields, call.more
    key_text = key if type(key) is str else render_value(s.key_column, key)
    if not key_text:
        raise RecordError("a key must not be empty")
    named = _render_fields(key_text, fields, more)
    status_text = (
        status if type(status) is str or status is None else render_value(s.status_column, status)
    )
    if s.status_column in named:
        given = named.pop(s.status_column)
        if status_text is not None and given != status_text:
            raise RecordError(f"key {key_text!r}: two different statuses given")
        status_text = given
    if status_text == "":
        raise RecordError(f"key {key_text!r}: status must not be empty")
    if s.key_column in named and named.pop(s.key_column) != key_text:
        raise RecordError(f"key {key_text!r}: field {s.key_column!r} contradicts the key")
    if s.timestamp_column in named:  # the spec's promise: the time of the last record
        raise RecordError(f"key {key_text!r}: field {s.timestamp_column!r} is set by record()")
    # ASCII is in every encoding the CSV may have: only other text is tried (a loop costs
    # half what joining the texts to test them at once does, on every record)
    plain = key_text.isascii() and (status_text is None or status_text.isascii())
    for name, text in named.items():
        plain = plain and name.isascii() and text.isascii()
    if not plain:
        _check_encodable(key_text, status_text, named, s.dialect.encoding)
    return RecordOp(key_text, status_text, named, at or timestamp_now(), call.worker)


def _render_fields(
    key: str, fields: Mapping[str, object] | None, more: Mapping[str, object]
) -> dict[str, str]:
    """``fields`` and ``more`` as one dict of texts (see :func:`prepare_record`)."""
    named: dict[str, str] = {}
    try:
        # keywords first: written before fields= in a call, as the spec's example has them
        for source in (more, fields) if fields else (more,):
            for given, value in source.items():
                name = given
                if type(name) is not str or not name or name in named:
                    name = _field_name(key, given, named)
                named[name] = value if type(value) is str else render_value(name, value)
    except AttributeError:
        if isinstance(fields, Mapping):
            raise
        raise TypeError(
            f"key {key!r}: fields must be a mapping of names to values, not {type(fields).__name__}"
        ) from None
    return named


def _field_name(key: str, name: object, named: dict[str, str]) -> str:
    """``name`` as a plain ``str`` (a ``StrEnum`` member names its value's column).

    Raises:
        RecordError: not text, empty, or given twice (in ``fields=`` and as a keyword).
    """
    text = str.__str__(name) if isinstance(name, str) else None
    if text is None:
        problem = f"field name {name!r} is of type {type(name).__name__}, not text"
    elif not text:
        problem = "a field name must not be empty"
    elif text in named:
        problem = f"field {text!r} given twice (in fields= and as a keyword argument)"
    else:
        return text
    raise RecordError(f"key {key!r}: {problem}")


def _check_encodable(key: str, status: str | None, named: dict[str, str], encoding: str) -> None:
    """Refuse text the CSV's encoding cannot write (a lone surrogate even in UTF-8, e.g.
    from an undecodable command-line argument; a Chinese name in latin-1): accepted, it
    would stop every export of the CSV for good."""
    parts = [("the key", key), ("the status", status or "")]
    parts += [(f"field name {name!r}", name) for name in named]
    parts += [(f"field {name!r}", value) for name, value in named.items()]
    for what, text in parts:
        try:
            text.encode(encoding)
        except UnicodeEncodeError as exc:
            raise RecordError(
                f"key {key!r}: {what} holds {text[exc.start : exc.end]!r}, which the CSV's"
                f" encoding ({encoding}) cannot write"
            ) from None


@dataclass(slots=True)
class ColumnCache:
    """The CSV's columns in order, as this handle last saw them in the journal.

    Columns only ever append and never change position, so a cached name stays right;
    only a name missing from the cache sends us back to the journal.
    """

    names: list[str] = field(default_factory=list)
    # column name -> its position as text, the key of its cell in ``rows.cells``
    index: dict[str, str] = field(default_factory=dict)

    def load(self, conn: sqlite3.Connection) -> None:
        """Reload every column name from the journal."""
        self.names = [name for (name,) in conn.execute("SELECT name FROM columns ORDER BY pos")]
        self.index = {name: str(pos) for pos, name in enumerate(self.names)}

    def truncate(self, length: int) -> None:
        """Forget columns added after the first ``length`` (their transaction rolled back)."""
        for name in self.names[length:]:
            del self.index[name]
        del self.names[length:]

    def cell(self, conn: sqlite3.Connection, name: str) -> str:
        """Return the cell key of column ``name``, appending the column to the CSV if new.

        Must run inside a write transaction (another process may have added columns).
        """
        pos = self.index.get(name)
        if pos is None:
            (count,) = conn.execute("SELECT count(*) FROM columns").fetchone()
            if count != len(self.names):
                self.load(conn)
                pos = self.index.get(name)
        if pos is None:
            pos = str(len(self.names))
            conn.execute("INSERT INTO columns (pos, name) VALUES (?, ?)", (int(pos), name))
            self.names.append(name)
            self.index[name] = pos
        return pos


def runs(ops: Sequence[RecordOp]) -> Iterator[Sequence[RecordOp]]:
    """``ops`` in order, cut into runs that hold each key once: the event of a status-less
    record reads its row's status, so every event is written after the upserts before it."""
    start = 0
    seen: set[str] = set()
    for index, op in enumerate(ops):
        if op.key in seen:
            yield ops[start:index]
            start, seen = index, set()
        seen.add(op.key)
    yield ops[start:]


class Writer:
    """Turns :class:`RecordOp` into rows and events inside the caller's transaction."""

    def __init__(self, settings: Settings) -> None:
        self.columns = ColumnCache()
        self._key_column = settings.key_column
        self._status_column = settings.status_column
        self._timestamp_column = settings.timestamp_column
        self._terminal = settings.terminal
        self._terminal_text: str | None = None  # as stored, when last read
        self.formula_guard = settings.formula_guard
        self._next_seq: int | None = None
        # The highest number handed out in work that was then undone (a block that raised):
        # none at or below it is given again, where SQLite's max + 1 would.
        self._floor = 0
        self._fixed: tuple[str, str, str] | None = None
        # The connection and its PRAGMA data_version when the shared settings were last read.
        self._read_as: tuple[sqlite3.Connection, int] | None = None

    def begin(self, conn: sqlite3.Connection) -> int:
        """Start a write transaction's work (``conn`` holds the lock): forget the sequence
        state of the last one, read the terminal statuses and the formula guard again if
        another connection committed since; return a :meth:`mark`."""
        self._next_seq = None
        # Another handle's open may have replaced them (and set every row's flag by the new
        # set): a record flagging its row by the old set would undo that. Or turned the
        # guard on: records must not make rows it shows alike from then on. Only another
        # connection's commit can change them, and data_version tells of one; the read
        # itself cost a lone thread's record 3-5% (it runs right after an fsync, cold).
        (version,) = conn.execute("PRAGMA data_version").fetchone()
        read_as = self._read_as
        if read_as is None or read_as[0] is not conn or read_as[1] != version:
            text, guard = conn.execute(_SHARED_SETTINGS).fetchone()
            self.formula_guard = guard == "true"
            if text != self._terminal_text:
                self._terminal = frozenset(json.loads(text))
                self._terminal_text = text
            self._read_as = (conn, version)
        return self.mark()

    def is_terminal(self, status: str) -> bool:
        """Whether ``status`` is terminal (as of this transaction's :meth:`begin`)."""
        return status in self._terminal

    @property
    def numbering(self) -> bool:
        """Whether this transaction numbers events itself (then every op must be
        :meth:`allocate`\\ d)."""
        return self._next_seq is not None

    def allocate(self, conn: sqlite3.Connection, op: RecordOp) -> int:
        """Give ``op`` the next sequence number of this transaction (we hold the lock)."""
        if self._next_seq is None:
            (last,) = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
            if last >= self._floor:  # committed past it: SQLite may number events again
                self._floor = 0
            self._next_seq = max(last, self._floor) + 1
        op.seq = self._next_seq
        self._next_seq += 1
        return op.seq

    def mark(self) -> int:
        """A savepoint's view of this writer's in-memory state."""
        return len(self.columns.names)

    def restore(self, mark: int) -> None:
        """Undo the in-memory effects of a rolled-back savepoint or transaction. The
        sequence numbers it handed out are not given again (``record()`` returned them)."""
        self.columns.truncate(mark)
        if self._next_seq is not None:
            self._floor = max(self._floor, self._next_seq - 1)

    def apply(self, conn: sqlite3.Connection, ops: Sequence[RecordOp]) -> None:
        """Write ``ops`` in order. A lone op without a sequence number is numbered here
        (``op.seq`` is set; by SQLite, unless undone work handed out higher numbers);
        otherwise every op must have been :meth:`allocate`\\ d."""
        if len(ops) == 1 and ops[0].seq is None:
            if not self._floor:
                event, upsert = self.params(conn, ops[0])
                seq = conn.execute(_INSERT_EVENT, event).lastrowid
                ops[0].seq = seq
                conn.execute(_UPSERT_ROW, (*upsert[:4], seq, *upsert[5:]))
                return
            self.allocate(conn, ops[0])  # above the numbers of undone work
        for run in runs(ops):
            self._apply_run(conn, run)

    def _apply_run(self, conn: sqlite3.Connection, ops: Sequence[RecordOp]) -> None:
        events = []
        upserts = []
        for op in ops:
            event, upsert = self.params(conn, op)
            events.append(event)
            upserts.append(upsert)
        conn.executemany(_INSERT_EVENT, events)
        conn.executemany(_UPSERT_ROW, upserts)

    def _fixed_cells(self, conn: sqlite3.Connection) -> tuple[str, str, str]:
        # Created with the journal, so their positions never change.
        cell = self.columns.cell
        self._fixed = (
            cell(conn, self._key_column),
            cell(conn, self._status_column),
            cell(conn, self._timestamp_column),
        )
        return self._fixed

    @property
    def cells_known(self) -> bool:
        """Whether :meth:`params` knows the key's, status's and timestamp's cells without
        asking the journal (it asks for a new field's too)."""
        return self._fixed is not None

    def status_cell(self, conn: sqlite3.Connection) -> str:
        """The cell key of the status column (``conn`` in a write transaction)."""
        return (self._fixed or self._fixed_cells(conn))[1]

    def params(self, conn: sqlite3.Connection, op: RecordOp) -> tuple[tuple[object, ...], ...]:
        """The parameters of ``op``'s event insert and row upsert (see the statements
        above); a new field's column is added to the journal on the way."""
        index = self.columns.index
        cell = self.columns.cell
        key_cell, status_cell, stamp_cell = self._fixed or self._fixed_cells(conn)
        patch = [f'"{stamp_cell}":{_quote(op.at)}']
        if op.status is not None:
            patch.append(f'"{status_cell}":{_quote(op.status)}')
        names = []
        for name, value in op.fields.items():
            text = _quote(value)
            names.append(f"{_quote(name)}:{text}")
            patch.append(f'"{index.get(name) or cell(conn, name)}":{text}')
        patch_json = ",".join(patch)
        head = f'"{key_cell}":{_quote(op.key)}'
        if op.status is None:
            head += f',"{status_cell}":"{PENDING}"'
        event = (op.seq, op.key, op.status, f"{{{','.join(names)}}}", op.at, op.worker, op.note)
        return (
            (*event, _forking.PID),
            (
                op.key,
                op.status,
                f"{{{patch_json}}}",
                f"{{{head},{patch_json}}}",
                op.seq,
                (op.status or PENDING) in self._terminal,
                op.lease_until,
                op.worker,
            ),
        )
