"""The :class:`Journal` API and :func:`open`."""

from __future__ import annotations

import atexit
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import Connection

from csvjournal import _forking, _reads
from csvjournal._batch import BatchState
from csvjournal._groupcommit import GroupCommitter
from csvjournal._importer import check_keys, import_rows
from csvjournal._options import Options
from csvjournal._settings import Settings, settle
from csvjournal._values import render_value
from csvjournal._writer import RecordOp, Writer, prepare_record
from csvjournal.csvio import EXCEL_MAX_CELL, read_csv
from csvjournal.errors import (
    ExportError,
    JournalClosedError,
)
from csvjournal.exporter import Exporter, export_to, flush_csv
from csvjournal.store import Store, remove_journal_files

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

    import pandas as pd

    from csvjournal.events import Event

__all__ = ["Journal", "open"]

log = structlog.get_logger(__name__)

_HOST = socket.gethostname()
# Connections that a forked child inherited open (see _forking) must never be closed
# there; they are kept here, unused, until the process ends.
_fork_orphans: list[object] = []


class Journal:
    """A handle on one journal: record updates, read state, share between threads.

    Create it with :func:`csvjournal.open`. It is safe to share between threads; passed to
    a worker process (fork or spawn) it reopens there as a non-exporting handle.
    """

    def __init__(self, options: Options) -> None:
        self._options = options
        self._closed = False
        self._gate = _forking.ForkGate()
        self._fork_safe = True
        self._warned_cells = False
        self._attach_lock = threading.Lock()
        self._attach()
        _forking.register(self)

    def _attach(self) -> None:
        options = self._options
        self._pid = os.getpid()
        created = not options.journal_path.exists()
        # A new journal imports an existing CSV: read and check it before anything exists.
        source = None
        if created and options.csv_path.exists():
            source = read_csv(options.csv_path, encoding=options.encoding)
            check_keys(options.csv_path, source, options.key or "")
        self._store = Store(
            options.journal_path,
            durability=options.durability,
            busy_timeout=options.busy_timeout,
            allow_network_fs=options.allow_network_fs,
        )
        try:
            with self._store.write() as conn:
                self._settings, columns = settle(
                    conn,
                    options.journal_path,
                    key=options.key,
                    terminal=options.terminal,
                    status_column=options.status_column,
                    timestamp_column=options.timestamp_column,
                    source=source,
                )
                if source is not None and columns is not None:
                    import_rows(conn, source, self._settings, columns)
        except BaseException:
            self._store.close()
            if created:  # leave nothing behind, as if open() had never been called
                remove_journal_files(options.journal_path)
            raise
        self._exporter: Exporter | None = None
        if options.export:
            self._start_exporter()
        s = self._settings
        self._writer = Writer(s.key_column, s.status_column, s.timestamp_column)
        self._write_lock = threading.Lock()
        self._local = threading.local()
        # thread id -> that thread's open batch (a dict: a missing attribute of a
        # threading.local costs more than a record's whole validation)
        self._batches: dict[int, BatchState] = {}
        sync = self._store.sync_wal if options.durability == "full" else None
        self._committer: GroupCommitter[RecordOp, int] = GroupCommitter(self._commit_group, sync)

    def _start_exporter(self) -> None:
        options = self._options
        exporter = Exporter(
            self._store, self._settings, options.csv_path, options.formula_guard, self._gate
        )
        try:
            leading = exporter.try_lead()
        except BaseException:
            self._store.close()
            raise
        exporter.start(leading)
        self._exporter = exporter

    def before_fork(self) -> None:
        """Close every connection before ``fork()`` (see :mod:`csvjournal._forking`)."""
        if self._closed or self._pid != os.getpid():
            return
        inside = self._batches.get(threading.get_ident()) is not None
        self._fork_safe = self._gate.close(self._options.busy_timeout, inside=inside)
        if self._fork_safe:
            self._store.close()
        else:
            log.warning("journal_busy_across_fork", path=str(self._options.journal_path))

    def after_fork_in_parent(self) -> None:
        """Let operations run again; connections reopen when next used."""
        self._gate.reopen()

    def after_fork_in_child(self) -> None:
        """Become a non-exporting handle that reopens the journal on first use."""
        self._gate = _forking.ForkGate()
        self._attach_lock = threading.Lock()
        if self._closed or self._pid != os.getppid():
            return
        if self._exporter is not None:
            self._exporter.forget_after_fork()
            self._exporter = None
        if not self._fork_safe:
            _fork_orphans.append(self._store.orphan())
        self._options = replace(self._options, export=False, key=None, terminal=None)
        self._pid = -1

    def _ensure(self) -> None:
        if self._closed:
            raise JournalClosedError(f"{self._options.journal_path}: journal is closed")
        if self._pid != os.getpid():
            with self._attach_lock:
                if self._pid != os.getpid():  # another thread may have reopened meanwhile
                    self._attach()

    def __reduce__(self) -> tuple[Any, ...]:
        child = replace(self._options, export=False, key=None, terminal=None)
        return (Journal, (child,))

    # -- properties ----------------------------------------------------------------------

    @property
    def csv_path(self) -> Path:
        """The CSV this journal keeps."""
        return self._options.csv_path

    @property
    def journal_path(self) -> Path:
        """The SQLite journal file."""
        return self._options.journal_path

    @property
    def settings(self) -> Settings:
        """The journal's key, status and timestamp columns and terminal statuses."""
        return self._settings

    @property
    def columns(self) -> list[str]:
        """Every column of the CSV, in order.

        Raises:
            JournalClosedError: the handle is closed.
        """
        with self._reading() as conn:
            return _reads.column_names(conn)

    # -- writing -------------------------------------------------------------------------

    def record(
        self,
        key: str,
        /,
        status: str | None = None,
        fields: Mapping[str, object] | None = None,
        **more: object,
    ) -> int:
        """Merge fields into the row ``key`` (created if new), stamp it, append an event,
        commit, and return the event's sequence number.

        Returns only when the commit is durable (per the journal's durability). Concurrent
        calls from several threads share one commit. Inside :meth:`batch` the record commits
        with the block instead.

        Raises:
            TypeError: a value of an unsupported type (the message names the field).
            RecordError: an empty key, field name or status, or fields contradicting the key.
            JournalBusyError: other writers held the journal longer than the busy timeout.
            JournalClosedError: the handle is closed.
        """
        self._ensure()
        op = self._prepare(key, status, fields, more)
        if not self._warned_cells and any(len(v) > EXCEL_MAX_CELL for v in op.fields.values()):
            self._warned_cells = True
            log.warning("excel_cell_limit_exceeded", path=str(self.csv_path), key=op.key)
        batch: BatchState | None = self._batches.get(threading.get_ident())
        if batch is not None:
            return batch.add(op)
        self._gate.enter()
        try:
            return self._committer.submit(op)
        finally:
            self._gate.exit()

    def _prepare(
        self,
        key: object,
        status: object,
        fields: Mapping[str, object] | None,
        more: Mapping[str, object],
    ) -> RecordOp:
        return prepare_record(self._settings, key, status, fields, more, worker=self._worker_name())

    def _worker_name(self) -> str:
        name: str | None = getattr(self._local, "worker", None)
        if name is None:
            name = f"{_HOST}:{self._pid}:{threading.current_thread().name}"
            self._local.worker = name
        return name

    def _commit_group(self, ops: Sequence[RecordOp]) -> list[int]:
        writer = self._writer
        with self._write_lock:
            conn = self._store.writer()
            self._store.begin_immediate(conn)
            mark = writer.begin()
            try:
                if len(ops) > 1:
                    for op in ops:
                        writer.allocate(conn, op)
                writer.apply(conn, ops)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                writer.restore(mark)
                raise
        return [op.seq for op in ops]  # type: ignore[misc]

    @contextmanager
    def batch(self) -> Iterator[Journal]:
        """Commit every ``record()`` of this thread inside the block as one transaction.

        Nothing is committed if the block raises. A nested block is a savepoint: if it
        raises, only its own records are undone (no row, column or event is left) and the
        outer block goes on.

        Raises:
            JournalBusyError: other writers held the journal longer than the busy timeout.
            JournalClosedError: the handle is closed.
        """
        self._ensure()
        state: BatchState | None = self._batches.get(threading.get_ident())
        if state is not None:
            with state.savepoint():
                yield self
            return
        with self._gate.operation(), self._write_lock, self._store.engine.connect() as conn:
            state = BatchState(conn, self._writer)
            self._batches[threading.get_ident()] = state
            try:
                with state.transaction():
                    yield self
            finally:
                del self._batches[threading.get_ident()]

    # -- reading -------------------------------------------------------------------------

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        self._ensure()
        batch: BatchState | None = self._batches.get(threading.get_ident())
        if batch is not None:  # this thread's own uncommitted records are visible to it
            batch.flush()
            yield batch.conn
            return
        with self._gate.operation(), self._store.read() as conn:
            yield conn

    def get(self, key: str) -> dict[str, str] | None:
        """The row of ``key`` as ``{column: text}`` over every CSV column, or ``None``.

        Raises:
            JournalClosedError: the handle is closed.
        """
        with self._reading() as conn:
            return _reads.get(conn, render_value(self._settings.key_column, key))

    def counts(self) -> dict[str, int]:
        """The number of rows per status.

        Raises:
            JournalClosedError: the handle is closed.
        """
        with self._reading() as conn:
            return _reads.counts(conn)

    def __len__(self) -> int:
        with self._reading() as conn:
            return _reads.row_count(conn)

    def pending(self) -> list[str]:
        """Keys of rows that are neither terminal nor held by a live lease, in CSV order.

        Raises:
            JournalClosedError: the handle is closed.
        """
        with self._reading() as conn:
            return _reads.pending(conn, self._settings.terminal, time.time())

    def history(self, key: str) -> list[Event]:
        """Every event of ``key``, oldest first (empty for an unknown key).

        Raises:
            JournalClosedError: the handle is closed.
        """
        with self._reading() as conn:
            return _reads.history(conn, render_value(self._settings.key_column, key))

    def to_dataframe(self) -> pd.DataFrame:
        """Every row as a pandas DataFrame of text, columns and rows in CSV order.

        Raises:
            JournalClosedError: the handle is closed.
        """
        with self._reading() as conn:
            return _reads.to_dataframe(conn)

    # -- the CSV -------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> None:
        """Return once the CSV on disk shows every commit made before the call, by any
        process. When no exporter is alive, this handle exports itself.

        Raises:
            FlushTimeoutError: ``timeout`` seconds passed first.
            ExportError: the CSV could not be written here and now.
            CsvChangedError: exporting here found the CSV edited by hand.
            JournalClosedError: the handle is closed.
        """
        self._ensure()
        with self._gate.operation():
            flush_csv(
                self._store,
                self._settings,
                self.csv_path,
                self._exporter,
                formula_guard=self._options.formula_guard,
                timeout=timeout,
            )

    def export(self, path: str | os.PathLike[str] | None = None) -> None:
        """Write the CSV now: to ``path`` if given (the journal's CSV is left alone),
        else the journal's own CSV (through the exporter, wherever it runs).

        Raises:
            ExportError: the file could not be written.
        """
        self._ensure()
        if path is None:
            self.flush()
            return
        try:
            export_to(self._store, self._settings, Path(path), self._options.formula_guard)
        except OSError as exc:
            raise ExportError(f"{path}: could not write the CSV: {exc}") from exc

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Close the handle; closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        _forking.unregister(self)
        if self._pid == os.getpid():
            if self._exporter is not None:
                self._exporter.stop()  # the exporter writes the last commits first
            with self._gate.operation():
                self._store.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Journal {str(self._options.csv_path)!r} {state}>"


def _close_at_exit() -> None:
    # A program that never closed its journal still gets its last records into the CSV.
    for journal in _forking.registered():
        if isinstance(journal, Journal):
            journal.close()


atexit.register(_close_at_exit)
