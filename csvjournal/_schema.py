"""The journal's tables, as SQLAlchemy Core objects (the shape of the newest revision).

``rows`` holds each row's current state in CSV order (``pos``); its ``cells`` are a JSON object
from column position (as text) to cell text, so a new column costs existing rows nothing and a
record merges into a row with SQLite's ``json_patch``. ``key`` and ``status`` repeat two cells
so they can be looked up and filtered; ``last`` is the row's newest event, and each event's
``prev`` the row's event before it: ``history()`` walks that chain back. A record writes the
same two integers however long the row's past (a list of the row's events, rewritten by each
record, made a record on a row with 30,000 events 20 times slower), with no second index on
``events`` to update and to check. ``events`` is the append-only audit trail (``seq`` is
SQLite's rowid: max + 1, so it only grows). ``line`` is the row's rendered CSV record as the
exporter last wrote it, NULL once the row changes, and ``line_columns`` the column count it was
rendered for (NULL: the one in the ``lines_format`` setting). ``done`` is 1 for a row in a
terminal status; ``lease_until`` (epoch seconds), ``holder`` and ``attempts`` are the claim
state, kept here and never in the CSV. ``free_rows`` lists the rows neither done nor leased,
kept by triggers on ``rows``: a table, not an index, so that the integrity check at every
restart reads it without looking each row up in it. ``columns`` is the CSV's column order and
``settings`` the journal's JSON-encoded settings.

Migrations in ``migrations/`` create these tables; this module is what queries use.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from sqlalchemy import Column, Connection, Float, Index, Integer, MetaData, Table, Text, text

from csvjournal._fsinfo import companion
from csvjournal._readonly import make_companions, may_write, remove_made_companions

__all__ = ["columns", "driver", "events", "free_rows", "metadata", "peek", "rows", "settings"]


def driver(conn: Connection) -> sqlite3.Connection:
    """The DBAPI connection under ``conn``, in the same transaction: for statements run
    often enough that SQLAlchemy's statement building (~0.5 ms) would cost more than them."""
    raw = conn.connection.driver_connection
    assert isinstance(raw, sqlite3.Connection)
    return raw


@contextmanager
def peek(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the database at ``path``, which writes no byte of it: a
    hot WAL left by a killed process is read, not checkpointed or deleted (only a hot
    rollback journal is rolled back first, see :func:`_read_only`). The -wal/-shm files
    the connection had to make are removed again: by hand if the block raises (the
    database is refused), else by SQLite unless another process uses them by now.

    Raises:
        sqlite3.Error: the file cannot be opened or read as a database.
    """
    companions = [companion(path, suffix) for suffix in ("-wal", "-shm")]
    existed = [made.exists() for made in companions]
    try:
        make_companions(path)  # (a user who may not write it: see csvjournal._readonly)
        with closing(_read_only(path)) as conn:
            yield conn
    except BaseException:
        for made, was_there in zip(companions, existed, strict=True):
            # one made here holds no commit (at most an empty -shm index): ours to remove
            if not was_there and made.exists() and made.stat().st_size <= 32768:
                made.unlink(missing_ok=True)
        raise
    if not any(existed):
        _let_sqlite_tidy(path)


def _let_sqlite_tidy(path: Path) -> None:
    """Have SQLite remove the -wal/-shm files a read-only connection had to make (it
    cannot itself): the last connection to close removes them, and SQLite's own locks
    tell whether this one is the last; another process's stay as they are. A user who may
    not write the journal removes them by hand (see :mod:`csvjournal._readonly`)."""
    if not may_write(path):
        remove_made_companions(path)
        return
    try:
        with closing(sqlite3.connect(path)) as conn:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except (sqlite3.Error, OSError):  # a read-only folder, say: they stay, harmless
        pass


_READONLY_ROLLBACK = 8 | 3 << 8  # SQLITE_READONLY_ROLLBACK: a hot rollback journal


def _read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection to ``path`` that has read its first page. A rollback journal
    left by a process killed mid-transaction (a journal's creation, before WAL mode) must
    be rolled back first, which only a writing connection can do: any reader would, and
    it only puts back what was committed."""
    uri = f"{path.resolve().as_uri()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as exc:
        conn.close()
        if getattr(exc, "sqlite_errorcode", None) != _READONLY_ROLLBACK:
            raise
        with closing(sqlite3.connect(path)) as writer:
            writer.execute("SELECT count(*) FROM sqlite_master").fetchone()
        conn = sqlite3.connect(uri, uri=True)
    return conn


metadata = MetaData()

settings = Table(
    "settings",
    metadata,
    Column("name", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

columns = Table(
    "columns",
    metadata,
    Column("pos", Integer, primary_key=True, autoincrement=False),
    Column("name", Text, nullable=False, unique=True),
)

rows = Table(
    "rows",
    metadata,
    Column("pos", Integer, primary_key=True),
    Column("key", Text, nullable=False, unique=True),
    Column("status", Text, nullable=False),
    Column("cells", Text, nullable=False),
    Column("line", Text),
    Column("lease_until", Float),
    Column("holder", Text),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("done", Integer, nullable=False, server_default="0"),
    Column("last", Integer),
    Column("line_columns", Integer),
)
Index("rows_leased", rows.c.lease_until, sqlite_where=text("lease_until IS NOT NULL"))

# The rows neither done nor leased, in CSV order, with what a claim filters on: where claims
# and pending() look first. Triggers on ``rows`` keep it (see migration 0005).
free_rows = Table(
    "free_rows",
    metadata,
    Column("pos", Integer, primary_key=True, autoincrement=False),
    Column("key", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("key", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("fields", Text, nullable=False),
    Column("at", Text, nullable=False),
    Column("worker", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("note", Text),
    Column("prev", Integer),
)
