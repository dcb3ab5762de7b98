"""The SQLite side: engine and connection settings, transactions and busy retries.

Every connection runs in WAL mode with ``busy_timeout`` and ``synchronous`` set from the
durability; every write transaction starts with ``BEGIN IMMEDIATE`` (SQLAlchemy's
documented pysqlite recipe: the driver's own transaction handling is switched off and the
``begin`` event emits the statement), so a writer holds SQLite's write lock from its first
statement and ``SQLITE_BUSY_SNAPSHOT`` cannot happen. A busy database is retried with
exponential backoff and jitter, then :class:`~csvjournal.errors.JournalBusyError`.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

import structlog
import tenacity
from sqlalchemy import URL, Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import PoolProxiedConnection

from csvjournal import _migrate
from csvjournal._dberrors import io_error, is_damaged, read_only_error
from csvjournal._fsinfo import NETWORK_FILESYSTEMS, companion, filesystem_of
from csvjournal._interrupts import HeldInterrupts
from csvjournal._readonly import await_readers_files, make_companions
from csvjournal._schema import peek
from csvjournal._writerqueue import GAVE_UP, WriterQueue
from csvjournal.errors import (
    CsvJournalError,
    JournalBusyError,
    JournalIOError,
    NetworkFilesystemError,
    SettingsError,
)

__all__ = ["Durability", "Store", "is_busy", "remove_journal_files"]

log = structlog.get_logger(__name__)

Durability = Literal["full", "normal"]
_SYNCHRONOUS: dict[str, str] = {"full": "FULL", "normal": "NORMAL"}
# SQLite syncs its files with fdatasync where the system has it (macOS has not: fsync).
_sync_data = getattr(os, "fdatasync", os.fsync)
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6
# SQLite's own busy handler waits this long per attempt; tenacity spaces the attempts.
_ATTEMPT_MS = 250
_T = TypeVar("_T")
_WAL_SIZE_LIMIT = 32 * 1024 * 1024  # bytes a WAL is cut back to when it starts over


class _StopWhen(tenacity.stop.stop_base):
    """Stop retrying once ``cancelled()`` says so (the writer no longer wants the write)."""

    def __init__(self, cancelled: Callable[[], bool]) -> None:
        self._cancelled = cancelled

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self._cancelled()


def is_busy(exc: BaseException) -> bool:
    """Tell whether ``exc`` is SQLite's "database is locked/busy" (any extended code)."""
    if isinstance(exc, DBAPIError):
        exc = exc.orig  # type: ignore[assignment]
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    text = str(exc)
    return "locked" in text or "busy" in text


def _try_begin(conn: sqlite3.Connection) -> bool:
    """``BEGIN IMMEDIATE``; False if another writer holds the journal."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if is_busy(exc):
            return False
        raise
    return True


def remove_journal_files(path: Path) -> None:
    """Delete a journal and its -wal/-shm files (only ever one this process just created)."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


class Store:
    """One process's access to one journal file: an engine plus retry policy.

    ``before_upgrade`` runs before an existing journal's schema is upgraded, given the
    write connection on the old schema: it may refuse the open (raise; nothing is
    changed) or back the journal up;
    ``queue_path`` is the lock file that queues writers across processes.

    Raises (from the constructor):
        SchemaTooNewError: the journal was written by a newer csvjournal (nothing written).
        SettingsError: the file is not a csvjournal journal or durability is unknown.
        NetworkFilesystemError: the journal is on a network file system (unless allowed).
        JournalBusyError: the journal stayed locked for longer than ``busy_timeout``.
    """

    def __init__(
        self,
        path: Path,
        *,
        durability: Durability,
        busy_timeout: float,
        allow_network_fs: bool = False,
        before_upgrade: Callable[[Connection], object] | None = None,
        queue_path: Path | None = None,
    ) -> None:
        if durability not in _SYNCHRONOUS:
            raise SettingsError(f"durability must be 'full' or 'normal', not {durability!r}")
        kind = filesystem_of(path.parent)
        if kind in NETWORK_FILESYSTEMS and not allow_network_fs:
            raise NetworkFilesystemError(
                f"{path}: on a {kind} network file system, where SQLite's WAL mode can lose"
                " or corrupt data; keep the journal on a local disk (journal_path=), or pass"
                " allow_network_fs=True if the file system is known to be safe"
            )
        self.path = path
        self.durability = durability
        self.busy_timeout = busy_timeout
        self._created = False  # until then a connection may create the file
        self.engine = self._make_engine()
        self._writer: PoolProxiedConnection | None = None
        self._writer_dbapi: sqlite3.Connection | None = None  # the DBAPI connection under it
        self._watcher: PoolProxiedConnection | None = None
        self._watchers = 0  # watcher connections opened so far
        self._wal_fd: int | None = None
        self._writer_lock = threading.Lock()
        self._attempt: partial[bool] | None = None  # BEGIN IMMEDIATE on the writer connection
        self._before_upgrade = before_upgrade
        self._queue = None if queue_path is None else WriterQueue(queue_path, busy_timeout, path)
        try:
            # Signals wait (see HeldInterrupts): a handler raising inside the connection
            # pool's checkout or in SQLAlchemy's statement set-up left a connection open
            # (the journal's -wal behind) or came out wrapped in SQLAlchemy's error.
            with HeldInterrupts():
                self._precheck()
                self._migrate()
            self._created = True
        except (DBAPIError, sqlite3.DatabaseError) as exc:
            self.engine.dispose()
            if is_busy(exc):
                raise
            error = io_error(exc, path)  # a full disk, say, is not a foreign file
            if error is not None:
                raise error from exc
            if is_damaged(exc):  # a journal, damaged: the handle names the backup to restore
                raise
            cause = exc.orig if isinstance(exc, DBAPIError) else exc
            raise SettingsError(f"{path}: not a csvjournal journal ({cause})") from exc
        except BaseException:
            self.engine.dispose()
            raise

    # -- connections -------------------------------------------------------------------

    def _make_engine(self) -> Engine:
        uri = self.path.absolute().as_uri()  # a '?' or '%41' in the name: escaped

        def connect() -> sqlite3.Connection:
            # Once the journal exists, a connection never makes a new, empty one in its
            # place: deleted by hand, the handle's commits must fail, not go elsewhere.
            mode = "rw" if self._created else "rwc"
            make_companions(self.path)  # a user who may only read it: see _readonly
            await_readers_files(self.path, self.busy_timeout)  # one who may write it
            return sqlite3.connect(
                f"{uri}?mode={mode}", uri=True, check_same_thread=False, isolation_level=None
            )

        engine = create_engine(  # the URL picks the pool for a file
            URL.create("sqlite", database=str(self.path)), creator=connect
        )
        synchronous = _SYNCHRONOUS[self.durability]
        attempt_ms = min(_ATTEMPT_MS, int(self.busy_timeout * 1000))

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
            dbapi_conn.execute(f"PRAGMA busy_timeout = {attempt_ms}")
            mode = dbapi_conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise CsvJournalError(f"{self.path}: SQLite refused WAL mode (got {mode})")
            dbapi_conn.execute(f"PRAGMA synchronous = {synchronous}")
            # After a burst (an import, a new column: hundreds of MB) the WAL would keep
            # its size until the last connection closes; each reset now cuts it back.
            dbapi_conn.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT}")

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            mode = conn.get_execution_options().get("csvj_begin", "IMMEDIATE")
            dbapi_conn = conn.connection.driver_connection
            assert isinstance(dbapi_conn, sqlite3.Connection)
            self.retry_busy(lambda: dbapi_conn.execute(f"BEGIN {mode}"))

        return engine

    def retry_busy(
        self, action: Callable[[], _T], cancelled: Callable[[], bool] | None = None
    ) -> _T:
        """Run ``action``, retrying while SQLite reports busy, up to ``busy_timeout`` s
        (or until ``cancelled()`` says to stop waiting).

        Raises:
            JournalBusyError: still busy when the time is up (or it was cancelled).
        """
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
        stop: tenacity.stop.stop_base = tenacity.stop_after_delay(self.busy_timeout)
        if cancelled is not None:
            stop = stop | _StopWhen(cancelled)
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_busy),
            wait=tenacity.wait_random_exponential(multiplier=0.005, max=0.5),
            stop=stop,
            before_sleep=self._log_busy,
            reraise=True,
        )
        try:
            return retrying(action)
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
            if cancelled is not None and cancelled():
                raise JournalBusyError(f"{self.path}: {GAVE_UP}") from exc
            raise JournalBusyError(
                f"{self.path}: journal still locked by another writer after {self.busy_timeout:g} s"
            ) from exc

    def _log_busy(self, state: tenacity.RetryCallState) -> None:
        log.debug("journal_busy_retry", path=str(self.path), attempt=state.attempt_number)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection inside a deferred (read) transaction; rolled back at the end."""
        with self.engine.connect() as conn:
            conn.execution_options(csvj_begin="DEFERRED")
            with conn.begin():
                yield conn

    @contextmanager
    def write(self, *, synced: bool = True) -> Iterator[Connection]:
        """A connection inside ``BEGIN IMMEDIATE`` (in this writer's turn); committed unless
        the block raises. ``synced=False`` skips the fsync of a ``"full"`` journal's commit
        (the commit survives a crash of the process; the next synced commit, or checkpoint,
        puts it on disk): only for bookkeeping whose loss in a power cut does no harm."""
        with self.turn(), self.engine.connect() as conn:
            relaxed = not synced and self.durability == "full"
            raw = conn.connection.driver_connection
            assert isinstance(raw, sqlite3.Connection)
            if relaxed:
                raw.execute("PRAGMA synchronous = NORMAL")
            try:
                with conn.begin():
                    yield conn
            finally:
                if relaxed:
                    raw.execute("PRAGMA synchronous = FULL")

    def turn(self) -> AbstractContextManager[None]:
        """This writer's turn among the journal's writers in every process (see
        :mod:`csvjournal._writerqueue`); hold it around a short write transaction.

        Raises:
            JournalBusyError: other writers kept the journal busy past the busy timeout.
        """
        return nullcontext() if self._queue is None else self._queue.turn()

    def writer(self) -> sqlite3.Connection:
        """This handle's dedicated DBAPI write connection (autocommit; BEGIN it yourself)."""
        found = self._writer_dbapi  # SQLAlchemy's two properties to it cost a record 1%
        if found is not None:
            return found
        with self._writer_lock:
            if self._writer is None:
                self._writer = self.engine.raw_connection()
                cursor = self._writer.cursor()
                if self.durability == "full":
                    # Group commits are made durable by sync_wal() after the write lock is
                    # released, so the next group's transaction overlaps this one's fsync.
                    cursor.execute("PRAGMA synchronous = NORMAL")
                if self._queue is not None:
                    # begin_writer() waits in the writers' queue, never in SQLite's sleeps.
                    cursor.execute("PRAGMA busy_timeout = 0")
            dbapi_conn = self._writer.driver_connection
            assert isinstance(dbapi_conn, sqlite3.Connection)
            self._writer_dbapi = dbapi_conn
        return dbapi_conn

    def data_version(self) -> tuple[int, int]:
        """A token that changes whenever another connection, of any process, commits.

        ``PRAGMA data_version`` on a connection kept for it: a few microseconds, where
        reading the newest event takes a read transaction (~50 µs, several times that
        right after a sleep). Its value is the connection's own, so the token also counts
        the connections opened (a fork closes it).
        """
        with self._writer_lock:
            if self._watcher is None:
                self._watcher = self.engine.raw_connection()
                self._watchers += 1
            (version,) = self._watcher.cursor().execute("PRAGMA data_version").fetchone()
            return self._watchers, int(version)

    def sync_wal(self) -> None:
        """fsync the WAL: every commit made before the call is then on disk.

        With ``synchronous=NORMAL`` a commit is written to the WAL but not synced; a sync of
        the WAL afterwards makes it exactly as durable as ``synchronous=FULL`` would (a
        checkpoint that moves frames to the database syncs the WAL first and the database
        after). The folder is synced once too, as SQLite does for a new WAL file. Like
        SQLite, it syncs the data (and the size) without the file's times: ``fsync`` would
        commit a new mtime to the file system's own journal at every call.
        """
        fd = self._wal_fd
        if fd is None:
            with self._writer_lock:
                if self._wal_fd is None:
                    self._wal_fd = self._open_wal()
                    folder = os.open(companion(self.path, "").parent, os.O_RDONLY)
                    try:
                        os.fsync(folder)
                    finally:
                        os.close(folder)
                fd = self._wal_fd
        _sync_data(fd)

    def _open_wal(self) -> int:
        try:
            return os.open(companion(self.path, "-wal"), os.O_RDONLY)
        except FileNotFoundError as exc:  # (a restore replaced the journal meanwhile, say)
            raise JournalIOError(
                f"{self.path}: the journal's -wal file is gone: the journal was deleted or"
                " replaced while this process had it open; what was recorded since may not"
                " be in it (stop every worker, then open the journal anew)"
            ) from exc

    def begin_writer(
        self, conn: sqlite3.Connection, cancelled: Callable[[], bool] | None = None
    ) -> bool:
        """``BEGIN IMMEDIATE`` on :meth:`writer`'s connection, in this writer's turn among
        the journal's writers (see :mod:`csvjournal._writerqueue`). Returns a token for
        :meth:`end_writer`, to be called once the transaction is committed or rolled back.
        ``cancelled()``, if given, says when to stop waiting for a busy journal.

        Raises:
            JournalBusyError: other writers kept the journal busy past the busy timeout
                (or the wait was cancelled).
        """
        if self._queue is None:
            self.begin_immediate(conn, cancelled)
            return False
        attempt = self._attempt
        if attempt is None or attempt.args[0] is not conn:
            attempt = self._attempt = partial(_try_begin, conn)
        return self._queue.begin(attempt, cancelled)

    def end_writer(self, queued: bool) -> None:
        """End the turn :meth:`begin_writer` began (``queued`` is what it returned)."""
        if self._queue is not None:
            self._queue.end(queued)

    def begin_immediate(
        self, conn: sqlite3.Connection, cancelled: Callable[[], bool] | None = None
    ) -> None:
        """``BEGIN IMMEDIATE`` on a DBAPI connection, retried while busy."""
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
            self.retry_busy(lambda: conn.execute("BEGIN IMMEDIATE"), cancelled)

    def close(self) -> None:
        """Close every connection of this store; the next use opens new ones."""
        with self._writer_lock:
            if self._wal_fd is not None:
                os.close(self._wal_fd)
                self._wal_fd = None
            for proxied in (self._writer, self._watcher):
                if proxied is not None:
                    proxied.close()
            self._writer = self._watcher = self._writer_dbapi = None
            self._attempt = None
        self.engine.dispose()
        if self._queue is not None:
            self._queue.close()

    def orphan(self) -> Any:
        """Forget every connection without closing it (in a forked child that inherited
        open connections: closing them could release the parent's locks). The caller
        keeps what this returns alive for the rest of the process."""
        kept = (self.engine, self._writer, self._watcher, self._wal_fd)
        self._writer = self._watcher = self._writer_dbapi = None
        self._attempt = None
        self._wal_fd = None
        self._writer_lock = threading.Lock()
        if self._queue is not None:
            self._queue.forget()
        return kept

    # -- schema ------------------------------------------------------------------------

    def _precheck(self) -> None:
        """Refuse a database we must not touch, through a read-only connection, before any
        setting (even WAL mode) could change a byte of it."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with peek(self.path) as conn:
            _migrate.check_file(conn, self.path)

    def _migrate(self) -> None:
        head = _migrate.head_revision()
        with self.read() as conn:
            if _migrate.current_revision(conn) == head:
                return
        with self.write() as conn:
            # Another process may have migrated between our read and our write lock.
            revision = _migrate.current_revision(conn)
            if revision != head:
                if revision is not None:  # a new journal is created, not upgraded
                    error = read_only_error(self.path)  # before a backup, kept for good
                    if error is not None:
                        raise error
                    if self._before_upgrade is not None:
                        self._before_upgrade(conn)  # a backup reads through its own connection
                    log.info("journal_schema_upgrade", path=str(self.path), old=revision, new=head)
                _migrate.upgrade(conn)
