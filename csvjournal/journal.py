"""The :class:`Journal` API and :func:`open`."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import Connection

from csvjournal import _forking, _reads
from csvjournal._batch import BatchState
from csvjournal._groupcommit import GroupCommitter
from csvjournal._importer import check_keys, import_rows
from csvjournal._settings import DEFAULT_STATUS, DEFAULT_TIMESTAMP, Settings, settle
from csvjournal._values import render_value, timestamp_now
from csvjournal._writer import RecordOp, Writer
from csvjournal.csvio import read_csv
from csvjournal.errors import (
    ExportError,
    FlushTimeoutError,
    JournalClosedError,
    RecordError,
    SettingsError,
)
from csvjournal.exporter import Exporter, export_to
from csvjournal.store import Durability, Store, remove_journal_files

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


@dataclass(frozen=True, slots=True)
class _Options:
    csv_path: Path
    journal_path: Path
    key: str | None
    export: bool
    durability: Durability
    terminal: frozenset[str] | None
    status_column: str
    timestamp_column: str
    busy_timeout: float
    encoding: str | None = None
    formula_guard: bool = False


class Journal:
    """A handle on one journal: record updates, read state, share between threads.

    Create it with :func:`csvjournal.open`. It is safe to share between threads; passed to
    a worker process (fork or spawn) it reopens there as a non-exporting handle.
    """

    def __init__(self, options: _Options) -> None:
        self._options = options
        self._closed = False
        self._gate = _forking.ForkGate()
        self._fork_safe = True
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
                    source_path=options.csv_path,
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
        exporter = Exporter(self._store, self._settings, options.csv_path, options.formula_guard)
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
        s = self._settings
        key_text = key if type(key) is str else render_value(s.key_column, key)
        if not key_text:
            raise RecordError(f"{self._options.journal_path}: a key must not be empty")
        named: dict[str, str] = {}
        for source in (fields, more) if fields else (more,):
            for name, value in source.items():
                if name in named or not name or type(name) is not str:
                    raise RecordError(
                        f"key {key_text!r}: field {name!r} is empty, not text or given twice"
                    )
                named[name] = value if type(value) is str else render_value(name, value)
        status_text = (
            status
            if type(status) is str or status is None
            else render_value(s.status_column, status)
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
        return RecordOp(key_text, status_text, named, timestamp_now(), self._worker_name())

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
        """
        with self._reading() as conn:
            target = _reads.last_seq(conn)
        deadline = None if timeout is None else time.monotonic() + timeout
        exporter = self._exporter
        if exporter is not None and exporter.leading:
            exporter.wake()
            if exporter.wait_for(target, timeout, lambda: exporter.leading):
                return
        while True:
            with self._reading() as conn:
                if (_reads.exported_seq(conn) or 0) >= target:
                    return
            if self._export_if_nobody_does():
                continue
            if deadline is not None and time.monotonic() >= deadline:
                raise FlushTimeoutError(
                    f"{self.csv_path}: the CSV did not catch up with the journal in {timeout} s"
                )
            time.sleep(0.02)

    def _export_if_nobody_does(self) -> bool:
        helper = Exporter(self._store, self._settings, self.csv_path, self._options.formula_guard)
        try:
            if not helper.try_lead():  # try_lead exports when it gets the lock
                return False
        except OSError as exc:
            raise ExportError(f"{self.csv_path}: could not write the CSV: {exc}") from exc
        helper.release()
        return True

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


def _as_set(names: Iterable[str]) -> Iterable[str]:
    return (names,) if isinstance(names, str) else names


def open(  # noqa: A001 - the spec's name, as in builtins.open
    csv_path: str | os.PathLike[str],
    *,
    key: str | None = None,
    journal_path: str | os.PathLike[str] | None = None,
    url: str | None = None,
    export: bool = True,
    durability: Durability = "full",
    terminal: Iterable[str] | None = None,
    status_column: str = DEFAULT_STATUS,
    timestamp_column: str = DEFAULT_TIMESTAMP,
    formula_guard: bool = False,
    encoding: str | None = None,
    busy_timeout: float = 30.0,
) -> Journal:
    """Open (or create) the journal of ``csv_path``.

    A new journal needs ``key``; an existing one keeps its stored settings (a conflicting
    ``key``/``status_column``/``timestamp_column`` is an error; ``terminal`` replaces the
    stored set). ``durability="full"`` makes each commit survive power loss, ``"normal"``
    a crash of the process. ``busy_timeout`` bounds how long a write waits for other
    writers.

    Raises:
        SettingsError: missing or conflicting arguments, or a file that is not a journal.
        SchemaTooNewError: the journal was written by a newer csvjournal (left unchanged).
        JournalBusyError: the journal stayed locked for longer than ``busy_timeout``.
    """
    csv = Path(csv_path)
    path = Path(journal_path) if journal_path is not None else Path(f"{csv}.journal")
    if url is not None:
        raise SettingsError("url= (a journal in a database server) is not supported yet")
    if key is None and not path.exists():
        raise SettingsError(f"{path}: no journal here yet, and key= is required to create one")
    options = _Options(
        csv_path=csv,
        journal_path=path,
        key=key,
        export=export,
        durability=durability,
        terminal=None if terminal is None else frozenset(_as_set(terminal)),
        status_column=status_column,
        timestamp_column=timestamp_column,
        busy_timeout=busy_timeout,
        encoding=encoding,
        formula_guard=formula_guard,
    )
    return Journal(options)
