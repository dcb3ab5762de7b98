"""A journal handle's lifetime: attaching to the files, the exporter, forks, write paths.

:class:`Handle` is the machinery under :class:`~csvjournal.journal.Journal`: it opens (or
creates) the journal, starts the exporter and, when this handle becomes the exporter at
open, begins a *session* (a backup, then recovery). It reopens itself in a forked or
spawned worker, and runs every write either in this thread's open ``batch()`` or through
the group committer, so concurrent records, claims and releases share commits and fsyncs.
"""

from __future__ import annotations

import contextlib
import multiprocessing.util
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Connection

from csvjournal import _forking, _opening
from csvjournal._atomicfile import remove_quietly
from csvjournal._batch import BatchState, foreign_batch_error
from csvjournal._commits import Commits, Item
from csvjournal._dberrors import DB_ERRORS, journal_errors, translate
from csvjournal._flush import catch_up
from csvjournal._groupcommit import GroupCommitter
from csvjournal._heldclaims import HeldClaims
from csvjournal._importer import import_rows
from csvjournal._interrupts import HeldInterrupts
from csvjournal._leases import Action, expire_leases
from csvjournal._options import Options
from csvjournal._orphans import OrphanWatch
from csvjournal._readonly import ReadOnlyVisit
from csvjournal._session import Session
from csvjournal._settings import (
    Settings,
    read_value,
    settle,
    settled,
    stored_guard,
)
from csvjournal._tags import give_tag, take_tag
from csvjournal._values import timestamp_now
from csvjournal._writer import RecordCall, Writer
from csvjournal.csvio import ParsedCsv
from csvjournal.errors import JournalBusyError, JournalClosedError
from csvjournal.exporter import Exporter
from csvjournal.store import Store, remove_journal_files

__all__ = ["Handle"]

log = structlog.get_logger(__name__)

_HOST = socket.gethostname()
# Connections that a forked child inherited open (see _forking) must never be closed
# there; they are kept here, unused, until the process ends.
_fork_orphans: list[object] = []


class Handle:
    """Open files, exporter, fork handling and the write paths of one journal handle."""

    def __init__(self, options: Options) -> None:
        self._options = options
        self._closed = False
        self._closing = False  # a close begun and not done (see Journal.close)
        self._gate = _forking.ForkGate()
        self._fork_safe = True
        self._attach_lock = threading.Lock()
        # rows claimed through this handle: key -> {worker: the thread that claimed as it},
        # oldest claim first (a row whose lease ran out may be claimed again by another)
        self._held = HeldClaims()
        self._session: Session | None = None  # begun if this handle exports
        self._tag = take_tag(options.journal_path)
        try:
            self._attach()
        except BaseException:
            self._undo_attach()
            give_tag(options.journal_path, self._tag)
            visit: ReadOnlyVisit | None = getattr(self, "_visit", None)
            if visit is not None and not _forking.open_here(options.journal_path):
                visit.end()  # the -wal/-shm files a refused open made (a read-only user's)
            raise
        _forking.register(self)

    def _attach(self) -> None:
        options = self._options
        self._pid = _forking.PID
        created = not options.journal_path.exists()
        source = _opening.source_to_import(options, created)
        self._visit = ReadOnlyVisit(options.journal_path)  # (before SQLite makes the files)
        self._store, made, ours = _opening.open_store(
            options, created, source, partial(_opening.before_upgrade, options)
        )
        self._created = False  # whether this open made the journal's settings (see _settle)
        try:
            with journal_errors(options.journal_path, options.csv_path):
                self._settle(source)
        except BaseException as exc:
            self._store.close()
            # Leave nothing behind, as if open() had never been called; but a journal
            # another process made, or is making (we waited for its lock), is theirs.
            if ours and not isinstance(exc, JournalBusyError):
                remove_journal_files(options.journal_path)
                remove_quietly(made)
            raise
        self._writer = Writer(self._settings)
        self._write_lock = threading.Lock()
        self._local = threading.local()
        # thread id -> that thread's open batch (a dict: a missing attribute of a
        # threading.local costs more than a record's whole validation)
        self._batches: dict[int, BatchState] = {}
        self._commits = Commits(
            self._store,
            self._settings,
            self._writer,
            write_lock=self._write_lock,
            held=self._held,
            csv_path=options.csv_path,
        )
        sync = self._store.sync_wal if options.durability == "full" else None
        self._committer: GroupCommitter[Item, object] = GroupCommitter(
            self._commits.commit_group, sync, reentered=self._commits.reentered
        )
        self._exporter: Exporter | None = None
        self._watch: OrphanWatch | None = None
        if options.export:
            self._start_exporter()
        elif options.worker_copy:  # writes the CSV if the exporting process dies meanwhile
            self._watch = OrphanWatch(self._store, self._settings, options.csv_path, self._gate)
            # a multiprocessing worker ends with os._exit: atexit never runs, finalizers do
            multiprocessing.util.Finalize(None, self._close_at_worker_exit, exitpriority=10)

    def _backup_now(self) -> Path:
        return _opening.backup_now(self._options)

    def _settle(self, source: ParsedCsv | None) -> None:
        """Load the journal's settings; create the journal (importing ``source``) or
        store new terminal statuses or formula guard in a write transaction only when there
        is any, after a backup of the journal as it was (unless backups are off)."""
        if source is None:
            with self._store.read() as conn:
                stored = settled(conn, self._options)
            if stored is not None:
                self._settings = stored
                return
        with self._store.write() as conn:
            self._settings, columns = settle(
                conn,
                self._options,
                source,
                before_change=partial(_opening.before_settings_change, self._options),
            )
            if source is not None and columns is not None:
                import_rows(conn, source, self._settings, columns)
        # (init: not another process's, made between its look and this open)
        self._created = columns is not None

    def _start_exporter(self) -> None:
        options = self._options
        exporter = Exporter(
            self._store, self._settings, options.csv_path, self._settings.formula_guard, self._gate
        )
        session = self._session = Session(self._store, options, self._gate, self._expire_leases)
        try:
            leading = exporter.try_lead(
                on_lead=session.begin,
                before_write=self._confirm_session,
                preview=lambda conn: session.preview(conn, self._settings),
                retry=True,
            )
        except OSError as exc:  # no lock file beside the CSV (its folder read-only, say):
            # the journal works on; the thread keeps trying, as for any failed export
            log.error("csv_export_failed", path=str(options.csv_path), error=str(exc))
            leading = False
        except BaseException:
            session.abandon()
            self._store.close()
            raise
        self._exporter = exporter
        exporter.start(leading)

    def _undo_attach(self) -> None:
        """After an open that failed (a signal's handler may raise anywhere in it): stop
        the exporter it started, and close the store, as if it had never been called."""
        exporter: Exporter | None = getattr(self, "_exporter", None)
        if exporter is not None:
            self._exporter = None
            exporter.stop()
        if self._session is not None:
            self._session.abandon()
        store: Store | None = getattr(self, "_store", None)
        if store is not None:
            store.close()

    def _confirm_session(self) -> list[str]:
        assert self._session is not None  # begun when this handle began leading
        return self._session.confirm()

    def _wait_for_session_backup(self) -> None:
        if self._session is not None:
            self._session.wait_for_backup()

    def _recently_checked(self) -> bool:
        return self._session is not None and self._session.recently_checked()

    def _session_recovered(self) -> tuple[list[tuple[str, str]], list[Path], bool]:
        """What this handle's exporting open recovered and no recover() reported yet."""
        return ([], [], False) if self._session is None else self._session.take_recovered()

    def _expire_leases(
        self, now: float | None = None, at: str | None = None
    ) -> list[tuple[str, str]]:
        now, at, worker = now or time.time(), at or timestamp_now(), self._worker_name()
        found = self._write(
            Action(lambda conn, w: expire_leases(conn, w, now=now, at=at, worker=worker))
        )
        return found  # type: ignore[return-value]

    # -- forks -----------------------------------------------------------------------------

    def _before_fork(self) -> None:
        """Close every connection before ``fork()`` (see :mod:`csvjournal._forking`)."""
        if self._closed or self._pid != _forking.PID:
            return
        inside = self._batches.get(threading.get_ident()) is not None
        self._fork_safe = self._gate.close(self._options.busy_timeout, inside=inside)
        if self._fork_safe:
            self._store.close()
        else:
            log.warning("journal_busy_across_fork", path=str(self._options.journal_path))

    def _after_fork_in_parent(self) -> None:
        """Let operations run again; connections reopen when next used."""
        self._gate.reopen()

    def _after_fork_in_child(self) -> None:
        """Become a non-exporting handle that reopens the journal on first use."""
        self._gate = _forking.ForkGate()
        self._attach_lock = threading.Lock()
        self._held = HeldClaims()  # the parent's claims stay the parent's
        if self._closed or self._pid != os.getppid():
            return
        if self._exporter is not None:
            self._exporter.forget_after_fork()
            self._exporter = None
        if self._watch is not None:
            self._watch.forget_after_fork()
        if not self._fork_safe:
            _fork_orphans.append(self._store.orphan())
            # SQLite keeps its locks per file in the process's memory: with one held at
            # the fork, every connection of this child to the journal would wait for a
            # lock nobody will release (its busy timeout, then an error), holding up the
            # parent's writers meanwhile. Said at once instead.
            self._closed = True
            self._closed_why = (
                "this process was forked while the journal was in use (inside a batch() or"
                " a commit): SQLite's locks cannot cross a fork, so it cannot use the"
                " journal; fork outside batch() blocks, or start workers with spawn"
            )
        self._options = self._child_options()
        self._pid = -1

    def _close_at_worker_exit(self) -> None:
        if self._pid == _forking.PID:
            getattr(self, "close")()  # noqa: B009 - Journal's, which Handle does not know

    def _child_options(self) -> Options:
        return replace(
            self._options, export=False, key=None, terminal=None, keep_backups=0, worker_copy=True
        )

    def _ensure(self) -> None:
        if self._closed:
            why = getattr(self, "_closed_why", "journal is closed")
            raise JournalClosedError(f"{self._options.journal_path}: {why}")
        if self._pid != _forking.PID:
            with self._attach_lock:
                if self._pid != _forking.PID:  # another thread may have reopened meanwhile
                    self._tag = take_tag(self._options.journal_path)  # this process's own
                    self._attach()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_forking.reopened, (type(self), self._child_options()))

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
        """The journal's key, status and timestamp columns, terminal statuses and formula
        guard (these two as stored now: another process's open may have replaced them
        since this one's; as last seen once the handle is closed)."""
        if self._closed:
            return self._settings
        with self._reading() as conn:
            stored, guard = read_value(conn, "terminal"), stored_guard(conn)
        terminal = frozenset(stored) if isinstance(stored, list) else self._settings.terminal
        if (terminal, guard) != (self._settings.terminal, self._settings.formula_guard):
            self._settings = replace(self._settings, terminal=terminal, formula_guard=guard)
        return self._settings

    # -- the write paths -------------------------------------------------------------------

    def _worker_name(self) -> str:
        name: str | None = getattr(self._local, "worker", None)
        if name is None:
            name = f"{_HOST}:{self._pid}:{threading.current_thread().name}{self._tag}"
            self._local.worker = name
        return name

    def _open_batch(self) -> BatchState | None:
        """This thread's open ``batch()``, if any (one whose end a signal's handler cut
        short is undone first: see :meth:`BatchState.end_abandoned`)."""
        batch: BatchState | None = self._batches.get(threading.get_ident())
        if batch is not None and batch.abandoned():
            batch.end_abandoned()
            return None
        return batch

    def _write(self, item: Item, committed: Callable[[object], object] | None = None) -> object:
        """Commit ``item``: in this thread's open batch, else in a group commit. Then
        ``committed`` is told the result, before a signal held off meanwhile is handled
        (which may raise: the caller's bookkeeping of a claim would be lost)."""
        batch = self._open_batch()
        try:
            if batch is not None:
                if not batch.here():
                    raise foreign_batch_error(self._options.csv_path)
                if isinstance(item, RecordCall):  # its claim ends once the block commits
                    return batch.add(self._commits.prepare(item))
                result = batch.run(item)
                if committed is not None:
                    committed(result)
                return result
            with HeldInterrupts():  # no Ctrl-C inside the commit: it would leave locks held
                self._gate.enter()
                try:
                    result = self._committer.submit(item)
                finally:
                    self._gate.exit()
                if committed is not None:
                    committed(result)
            if self._watch is not None:
                self._watch.poke()
            return result
        except DB_ERRORS as exc:  # a full disk, say: not a bare sqlite3 error (no with:
            # a context manager costs more than a record's validation)
            error = translate(exc, self._options.journal_path, self._options.csv_path)
            if error is exc:
                raise
            raise error from exc

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        self._ensure()
        batch = self._open_batch()
        with self._errors():
            if batch is not None and not batch.beginning:  # this thread's own uncommitted
                # records are visible to it (a signal's handler run as the block begins
                # reads elsewhere: the block's connection is in the midst of its BEGIN)
                batch.flush()
                yield batch.conn
                return
            # Signals wait (see HeldInterrupts): a handler raising inside the connection
            # pool's checkout or return leaked a connection, or left its lock held.
            with HeldInterrupts(), self._gate.operation(), self._store.read() as conn:
                yield conn

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        """SQLite's errors met inside the block, raised as csvjournal's."""
        return journal_errors(self._options.journal_path, self._options.csv_path)

    def _shut(self) -> None:
        """Stop the exporter (it writes the last commits first), see the CSV catch up if
        another handle exports, and close the store."""
        _forking.unregister(self)
        if self._pid == _forking.PID:  # (an inherited handle's tag is its parent's)
            give_tag(self._options.journal_path, self._tag)
            self._wait_for_session_backup()
            if self._exporter is not None:
                self._exporter.stop()
                self._catch_up()  # if another handle exports, or should now
            if self._watch is not None:
                self._watch.close()  # its export under way, or its last one
            with self._gate.operation():
                self._store.close()
            if not _forking.open_here(self._options.journal_path, but=self):
                self._visit.end()

    def _catch_up(self) -> None:
        with self._gate.operation(), self._errors():
            catch_up(
                self._store,
                self._settings,
                self.csv_path,
                formula_guard=self._settings.formula_guard,
                timeout=self._options.busy_timeout,
            )
