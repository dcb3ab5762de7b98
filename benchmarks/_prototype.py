"""The prototype issue 2 describes, rebuilt as a contender: what the machine allows.

Issue 2 says its targets were reached by "a leader/follower group commit (the first waiting
caller commits for everyone queued, waiting up to a few hundred microseconds for as many
callers as the last group had) over the DBAPI connection". This is that, and nothing more:
raw ``sqlite3``, raw sqlite3's own two statements per record (no validation, no event
chain, no columns, no claims, no cross-process queue, no fork safety), ``synchronous``
doing the fsync inside ``COMMIT``. Run in the same rounds as everyone else, its rate is the
ceiling of the design on the day's machine, to read csvjournal's ratios against.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path

__all__ = ["INSERT_EVENT", "UPSERT_ROW", "Prototype", "raw_connection"]

GATHER_SECONDS = 300e-6  # "a few hundred microseconds"

# Raw sqlite3's work per record, the baseline's and the prototype's alike.
INSERT_EVENT = "INSERT INTO events (key, status, fields, at, worker, pid) VALUES (?, ?, ?, ?, ?, ?)"
UPSERT_ROW = (
    "INSERT INTO rows (key, status, cells) VALUES (?, ?, ?) ON CONFLICT (key)"
    " DO UPDATE SET status = excluded.status, cells = excluded.cells"
)


def raw_connection(path: Path, synchronous: str) -> sqlite3.Connection:
    """A new database in WAL mode with raw sqlite3's two tables (autocommit, any thread)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute(
        "CREATE TABLE rows (pos INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE,"
        " status TEXT NOT NULL, cells TEXT NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, key TEXT NOT NULL, status TEXT,"
        " fields TEXT NOT NULL, at TEXT NOT NULL, worker TEXT NOT NULL, pid INTEGER)"
    )
    return conn


class _Waiter:
    __slots__ = ("done", "error", "params", "wake")

    def __init__(self, params: tuple[str, str, str]) -> None:
        self.params = params
        self.done = False
        self.error: BaseException | None = None
        self.wake = threading.Lock()
        self.wake.acquire()


class Prototype:
    """Minimal group commit over one raw ``sqlite3`` connection shared by threads."""

    def __init__(self, path: Path, synchronous: str) -> None:
        self.conn = raw_connection(path, synchronous)
        self._mutex = threading.Lock()
        self._arrived = threading.Condition(self._mutex)
        self._queue: list[_Waiter] = []
        self._leading = False
        self._last_group = 1

    def record(self, key: str, status: str, **fields: object) -> None:
        """Commit one record (with whoever else is waiting); return once it is durable."""
        cells = json.dumps({name: str(value) for name, value in fields.items()})
        me = _Waiter((key, status, cells))
        with self._mutex:
            self._queue.append(me)
            if len(self._queue) >= self._last_group:
                self._arrived.notify()
            lead = not self._leading
            self._leading = True
        if not lead:
            me.wake.acquire()  # our group is done, or we lead the next one
            if me.done:
                if me.error is not None:
                    raise me.error
                return
        with self._mutex:
            if len(self._queue) < self._last_group:
                self._arrived.wait(GATHER_SECONDS)
            group, self._queue = self._queue, []
        try:
            self._commit(group)
        except BaseException as exc:  # a group's failure is every caller's
            for waiter in group:
                waiter.error = exc
        with self._mutex:
            self._last_group = len(group)
            successor = self._queue[0] if self._queue else None
            self._leading = successor is not None
        if successor is not None:
            successor.wake.release()
        for waiter in group:
            waiter.done = True
            if waiter is not me:
                waiter.wake.release()
        if me.error is not None:
            raise me.error

    def _commit(self, group: list[_Waiter]) -> None:
        conn, pid = self.conn, os.getpid()
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        conn.execute("BEGIN IMMEDIATE")
        try:
            for waiter in group:
                key, status, cells = waiter.params
                conn.execute(INSERT_EVENT, (key, status, cells, at, "prototype", pid))
                conn.execute(UPSERT_ROW, (key, status, cells))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()
