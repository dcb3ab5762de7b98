"""Read queries over a journal connection: rows, counts, pending keys, history."""

from __future__ import annotations

import functools
import heapq
import json
import sqlite3
from collections.abc import Iterator
from typing import TYPE_CHECKING

from sqlalchemy import Connection, func, select, text

from csvjournal import _schema as t
from csvjournal._leases import FREE_ROWS, LAPSED_ROWS
from csvjournal._values import parse_timestamp
from csvjournal.events import Event

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "attempts",
    "cells_of",
    "column_names",
    "counts",
    "event_exists",
    "exported_seq",
    "get",
    "history",
    "keys_recorded_since",
    "last_seq",
    "leased_keys",
    "next_lease_end",
    "pending",
    "pending_count",
    "row_count",
    "to_dataframe",
]


def column_names(conn: Connection) -> list[str]:
    """Every column of the CSV, in order."""
    return [name for (name,) in t.driver(conn).execute("SELECT name FROM columns ORDER BY pos")]


def cells_of(columns: list[str], cells_json: str) -> list[str]:
    """A row's cells, one per column, from its ``rows.cells`` JSON."""
    get = json.loads(cells_json).get
    return [get(key, "") for key in _cell_keys(len(columns))]


@functools.cache
def _cell_keys(count: int) -> tuple[str, ...]:
    return tuple(str(pos) for pos in range(count))


def get(conn: Connection, key: str) -> dict[str, str] | None:
    """The row of ``key`` as ``{column: text}``, or ``None``."""
    cells_json = conn.execute(select(t.rows.c.cells).where(t.rows.c.key == key)).scalar()
    if cells_json is None:
        return None
    columns = column_names(conn)
    return dict(zip(columns, cells_of(columns, cells_json), strict=True))


def rows_by_key(conn: Connection, columns: list[str], keys: list[str]) -> dict[str, dict[str, str]]:
    """The rows of ``keys`` (those there are) as ``{column: text}``, by key, in one query
    (at most SQLite's 999 parameters: a few hundred keys at a time)."""
    found = t.driver(conn).execute(
        f"SELECT key, cells FROM rows WHERE key IN ({','.join('?' * len(keys))})", keys
    )
    return {key: dict(zip(columns, cells_of(columns, cells), strict=True)) for key, cells in found}


def leased_keys(conn: Connection, keys: list[str], now: float) -> set[str]:
    """Those of ``keys`` (a few hundred at most) whose rows a live lease holds."""
    found = t.driver(conn).execute(
        f"SELECT key FROM rows WHERE key IN ({','.join('?' * len(keys))})"
        " AND done = 0 AND holder IS NOT NULL AND lease_until > ?",
        [*keys, now],
    )
    return {key for (key,) in found}


def keys_recorded_since(conn: Connection, seq: int) -> set[str]:
    """The keys of the rows that events after event ``seq`` changed."""
    found = t.driver(conn).execute("SELECT DISTINCT key FROM events WHERE seq > ?", (seq,))
    return {key for (key,) in found}


def last_seq(conn: Connection) -> int:
    """The sequence number of the newest event (0 for none)."""
    (seq,) = t.driver(conn).execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
    return int(seq)


def event_exists(conn: Connection, seq: int) -> bool:
    """Whether the event ``seq`` is in the journal."""
    return (
        t.driver(conn).execute("SELECT 1 FROM events WHERE seq = ?", (seq,)).fetchone() is not None
    )


def exported_seq(conn: Connection) -> int | None:
    """The sequence number the CSV on disk reflects, as its exporter recorded it; None
    when unknown, or when the CSV shows the other formula guard (an open turned it on or
    off since): then it shows no state of the journal as the journal would show it."""
    found = dict(
        conn.execute(
            select(t.settings.c.name, t.settings.c.value).where(
                t.settings.c.name.in_(("csv_seq", "csv_guard", "formula_guard"))
            )
        ).all()
    )
    if found.get("csv_seq") is None:
        return None
    shown = found.get("csv_guard")
    if shown is not None and shown != found.get("formula_guard", "false"):
        return None
    return int(found["csv_seq"])


def counts(conn: Connection) -> dict[str, int]:
    """Rows per status."""
    query = select(t.rows.c.status, func.count()).group_by(t.rows.c.status)
    return dict(conn.execute(query).all())


def row_count(conn: Connection) -> int:
    """The number of rows."""
    return int(conn.execute(select(func.count()).select_from(t.rows)).scalar_one())


def pending(conn: Connection, now: float, max_attempts: int | None = None) -> list[str]:
    """Keys of rows neither done nor held by a live lease at ``now``, in CSV order (and
    with fewer than ``max_attempts`` attempts, if given)."""
    params = (now, 2**62 if max_attempts is None else max_attempts)
    raw = t.driver(conn)
    lapsed = raw.execute(
        f"SELECT pos, key FROM rows INDEXED BY rows_leased WHERE {LAPSED_ROWS}", params
    ).fetchall()
    keys, positions = _free_rows(raw, params, positions=bool(lapsed))
    if not lapsed:  # the usual case: the free rows, already in order
        return keys
    lapsed.sort()
    return [key for _, key in heapq.merge(zip(positions, keys, strict=True), lapsed)]


# SQLite hands the free rows' keys over joined in one string: a Python row per key costs
# three times as much on a big journal. An aggregate takes its rows in scan order, and
# ``free_rows`` has no index: it is scanned by its primary key, the position, i.e. in CSV
# order (an ORDER BY in a subquery made SQLite pass every row through a co-routine, +50%
# on a million rows). The keys are
# joined by the unit separator; if a key holds one, the count disagrees, and the keys come
# as a JSON array instead (exact for any text, a little slower).
_SEPARATOR = "\x1f"
_FREE = f"FROM free_rows WHERE {FREE_ROWS}"


def _free_rows(
    raw: sqlite3.Connection, params: tuple[float, int], *, positions: bool
) -> tuple[list[str], list[int]]:
    """The free rows' keys in CSV order, and their positions if asked (else ``[]``)."""
    also = ", group_concat(pos)" if positions else ""
    count, joined, *joined_positions = raw.execute(
        f"SELECT count(*), group_concat(key, '{_SEPARATOR}'){also} {_FREE}", params
    ).fetchone()
    if not count:
        return [], []
    keys: list[str] = joined.split(_SEPARATOR)
    if len(keys) != count:
        (array,) = raw.execute(f"SELECT json_group_array(key) {_FREE}", params).fetchone()
        keys = json.loads(array, strict=False)
    return keys, [int(pos) for pos in joined_positions[0].split(",")] if positions else []


def pending_count(conn: Connection, now: float) -> int:
    """How many rows :func:`pending` would list."""
    (count,) = (
        t.driver(conn)
        .execute(
            f"SELECT (SELECT count(*) FROM free_rows WHERE {FREE_ROWS})"
            f" + (SELECT count(*) FROM rows INDEXED BY rows_leased WHERE {LAPSED_ROWS})",
            (now, 2**62),
        )
        .fetchone()
    )
    return int(count)


def next_lease_end(conn: Connection, now: float, max_attempts: int | None) -> float | None:
    """The earliest end of a live lease on a row not done and, if ``max_attempts`` is
    given, with fewer attempts than that; ``None`` if there is none."""
    query = text(
        "SELECT min(lease_until) FROM rows WHERE lease_until > :now AND done = 0"
        " AND attempts < :limit"
    )
    limit = 2**62 if max_attempts is None else max_attempts
    value = conn.execute(query, {"now": now, "limit": limit}).scalar()
    return None if value is None else float(value)


def attempts(conn: Connection, key: str) -> int | None:
    """How many times the row ``key`` was claimed (``None`` for an unknown key)."""
    value = conn.execute(select(t.rows.c.attempts).where(t.rows.c.key == key)).scalar()
    return None if value is None else int(value)


# From the row's newest event back along each event's link to the row's one before it.
_HISTORY = text(
    """
    WITH RECURSIVE chain(seq) AS (
        SELECT last FROM rows WHERE key = :key
        UNION ALL
        SELECT events.prev FROM events JOIN chain ON events.seq = chain.seq
        WHERE events.prev IS NOT NULL
    )
    SELECT seq, key, status, fields, at, worker, pid, note FROM events
    WHERE seq IN chain ORDER BY seq
    """
)


def history(conn: Connection, key: str) -> list[Event]:
    """Every event of ``key``, oldest first."""
    return [
        Event(
            seq=seq,
            key=row_key,
            status=status,
            fields=json.loads(fields),
            at=parse_timestamp(at),
            worker=worker,
            pid=pid,
            note=note,
        )
        for seq, row_key, status, fields, at, worker, pid, note in conn.execute(
            _HISTORY, {"key": key}
        )
    ]


def keys(conn: Connection) -> Iterator[str]:
    """Every row's key, in CSV order."""
    for (key,) in t.driver(conn).execute("SELECT key FROM rows ORDER BY pos"):
        yield key


_CHUNK_ROWS = 10_000  # rows parsed by one json.loads in to_dataframe()


def to_dataframe(conn: Connection) -> pd.DataFrame:
    """Every row as a DataFrame of text, columns in CSV order, rows in CSV order."""
    import pandas as pd  # deferred: pandas costs a worker process half a second to import

    names = column_names(conn)
    keys = _cell_keys(len(names))
    columns: list[list[str]] = [[] for _ in keys]
    cursor = t.driver(conn).execute("SELECT cells FROM rows ORDER BY pos")
    # One json.loads for many rows, and the cells gathered by column: 2-3 times faster
    # than a row at a time, without one string of the whole table.
    while chunk := cursor.fetchmany(_CHUNK_ROWS):
        rows = json.loads(f"[{','.join([cells for (cells,) in chunk])}]")
        for column, key in zip(columns, keys, strict=True):
            column.extend([row.get(key, "") for row in rows])
    frame = pd.DataFrame(
        dict(enumerate(columns)), index=pd.RangeIndex(len(columns[0]) if columns else 0), dtype=str
    )
    frame.columns = pd.Index(names, dtype=object)
    return frame
