"""The :class:`Journal` API and :func:`open`."""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from csvjournal import _forking, _reads
from csvjournal._atomicfile import reason
from csvjournal._batch import BatchState, Block, foreign_batch_error
from csvjournal._claims import Claims, attempts_limit
from csvjournal._flush import check_copy_target, export_to, flush_csv
from csvjournal._interrupts import HeldInterrupts
from csvjournal._values import render_value, storable
from csvjournal._writer import RecordCall
from csvjournal.backup import list_backups, remove_leftovers
from csvjournal.errors import CsvJournalError, ExportError
from csvjournal.exporter import Exporter
from csvjournal.recovery import RecoveryReport, check_integrity

if TYPE_CHECKING:
    from types import TracebackType

    import pandas as pd

    from csvjournal.events import Event

__all__ = ["Journal"]

log = structlog.get_logger(__name__)


class Journal(Claims):
    """A handle on one journal: record updates, claim work, read state, recover.

    Create it with :func:`csvjournal.open`. It is safe to share between threads; passed to
    a worker process (fork or spawn) it reopens there as a non-exporting handle.
    """

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
        commit, and return the event's sequence number. New field names become new columns
        at the end of the CSV: the keyword arguments' first, then those of ``fields``, each
        in the order given (as the call ``record(k, "DONE", A=1, fields={"B c": 2})`` reads).

        Returns only when the commit is durable (per the journal's durability). Concurrent
        calls from several threads share one commit. Inside :meth:`batch` the record commits
        with the block instead.

        Raises:
            TypeError: a value of an unsupported type (the message names the field), or
                ``fields`` not a mapping.
            RecordError: an empty key, field name or status, fields contradicting the key,
                or a value for the timestamp column (it is always the time of the record).
            JournalBusyError: other writers held the journal longer than the busy timeout.
            JournalIOError: SQLite could not write the journal (a full disk, say); the
                record was not committed.
            JournalClosedError: the handle is closed.
        """
        self._ensure()
        call = RecordCall(key, status, fields, more, self._worker_name())
        seq: int = self._write(call)  # type: ignore[assignment]
        return seq

    def batch(self) -> Block[Journal]:
        """Commit every ``record()`` of this thread inside the block as one transaction.

        Nothing is committed if the block raises. A nested block is a savepoint: if it
        raises, only its own records are undone (no row, column or event is left) and the
        outer block goes on.

        Raises:
            JournalBusyError: other writers held the journal longer than the busy timeout.
            JournalIOError: SQLite could not write the journal (a full disk, say); nothing
                of the block was committed.
            JournalClosedError: the handle is closed.
        """
        return Block(self._block(), self)

    @contextmanager
    def _block(self) -> Iterator[tuple[HeldInterrupts, BatchState | None]]:
        """:meth:`batch`'s opening and end, signals held (see :class:`Block`)."""
        self._ensure()
        state = self._open_batch()
        # Signals wait (see HeldInterrupts) but in the block itself: one raising in its
        # commit, its rollback or the bookkeeping after would leave the batch half-ended.
        # One that came while the block's last records were written is handled before
        # the COMMIT (still open here: a handler's records join it); raising, it undoes
        # the block, as raising in the block does.
        if state is not None:
            if not state.here():
                raise foreign_batch_error(self.csv_path)
            with HeldInterrupts() as held, state.savepoint(held.deliver):
                yield held, None
            return
        self._commits.check_journal()  # a connection would make a new, empty file there
        with (
            HeldInterrupts() as held,
            self._gate.operation(),
            self._commits.locked(),
            self._store.engine.connect() as conn,
        ):
            state = BatchState(
                conn,
                self._writer,
                self._errors,
                self._held.note_block,
                self._commits.twin_error,
                undone=self._held.unnote,
            )
            self._batches[threading.get_ident()] = state
            try:
                with state.open_here(), state.transaction(held.deliver):
                    yield held, state
                self._commits.check_journal()
            finally:
                # (a forked child that left the block reattached: a new dict of its own)
                self._batches.pop(threading.get_ident(), None)
        if self._watch is not None:
            self._watch.poke()

    # -- reading -------------------------------------------------------------------------

    def get(self, key: str) -> dict[str, str] | None:
        """The row of ``key`` as ``{column: text}`` over every CSV column, or ``None``.

        Raises:
            JournalClosedError: the handle is closed.
        """
        text = render_value(self._settings.key_column, key)
        with self._reading() as conn:
            return _reads.get(conn, text) if storable(text) else None

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

    def pending(self, *, max_attempts: int | None = None) -> list[str]:
        """Keys of rows that are neither terminal nor held by a live lease, in CSV order
        (with ``max_attempts``: only those :meth:`claim` with it could still take).

        Raises:
            SettingsError: ``max_attempts`` below 1.
            TypeError: ``max_attempts`` not an integer.
            JournalClosedError: the handle is closed.
        """
        max_attempts = attempts_limit("pending", max_attempts)
        with self._reading() as conn:
            return _reads.pending(conn, time.time(), max_attempts)

    def history(self, key: str) -> list[Event]:
        """Every event of ``key``, oldest first (empty for an unknown key).

        Raises:
            JournalClosedError: the handle is closed.
        """
        text = render_value(self._settings.key_column, key)
        with self._reading() as conn:
            return _reads.history(conn, text) if storable(text) else []

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
        process. When no exporter is alive, this handle exports itself. With a
        ``timeout``, a flush that waits for another process's exporter gives up at once
        when that process is stopped (SIGSTOP, Ctrl-Z): it exports nothing until resumed.

        Raises:
            FlushTimeoutError: ``timeout`` seconds passed first, or the exporting process
                is stopped (the error names it).
            SettingsError: ``timeout`` is NaN or below 0.
            TypeError: ``timeout`` is not a number.
            ExportError: the CSV could not be written (here, or by this handle's exporter
                while the call waited; it tries again, the records are safe).
            CsvChangedError: the CSV was edited by hand (found at the export here, or it
                stopped the exporter's exports: see ``csvjournal import --merge``).
            JournalIOError: the journal file was deleted or replaced while this handle
                had it open (no exporter will show what went into it).
            BatchOpenError: called inside a ``batch()`` block of this thread.
            JournalClosedError: the handle is closed.
        """
        self._flush(timeout, not_for_stopped=timeout is not None)

    def _flush(self, timeout: float | None, *, not_for_stopped: bool) -> None:
        """:meth:`flush`; ``not_for_stopped``: not waiting for a stopped exporter."""
        self._ensure()
        self._refuse_in_batch("flush")
        with self._errors():
            flush_csv(
                self._store,
                self._settings,
                self.csv_path,
                self._exporter,
                formula_guard=self._settings.formula_guard,
                timeout=timeout,
                gate=self._gate,
                not_for_stopped=not_for_stopped,
                check_journal=self._commits.check_journal,
            )

    def export(self, path: str | os.PathLike[str] | None = None) -> None:
        """Write the CSV now: to ``path`` if given (the journal's CSV is left alone),
        else the journal's own CSV (through the exporter, wherever it runs).

        Raises:
            ExportError: the file could not be written, or ``path`` is there and no
                regular file (a folder, a FIFO, a device).
            SettingsError: ``path`` is one of the journal's own files (its CSV, the journal
                and its -wal/-shm, a backup), or the CSV of another journal: they are never
                overwritten by a copy.
            BatchOpenError: the journal's own CSV, asked for inside a ``batch()`` block of
                this thread.
        """
        self._ensure()
        if path is None:
            self._refuse_in_batch("export")
            self.flush()
            return
        check_copy_target(Path(path), self.csv_path, self.journal_path)
        with self._errors():  # outermost: a JournalIOError is an OSError too
            try:
                export_to(self._store, self._settings, Path(path))
            except OSError as exc:
                if not Path(path).parent.is_dir():  # not the temp file's name: the folder's
                    raise ExportError(
                        f"{path}: could not write the CSV: no folder {Path(path).parent}"
                    ) from exc
                raise ExportError(f"{path}: could not write the CSV: {reason(exc)}") from exc

    # -- recovery and backups ----------------------------------------------------------

    def recover(self) -> RecoveryReport:
        """After a crash: check the journal's integrity, return expired leases to
        ``PENDING`` (an event names each lost worker), remove leftover temporary files and
        regenerate the CSV if it is behind. The exporting ``open()`` does the same itself
        (and its integrity check, if less than a minute old, stands for this one's).

        Raises:
            JournalCorruptError: the journal fails the integrity check (the message names
                the newest backup).
            ExportError: the CSV could not be written.
            FlushTimeoutError: another process exports, and it is stopped (SIGSTOP,
                Ctrl-Z): the CSV stays behind until it is resumed (the error names it).
            BatchOpenError: called inside a ``batch()`` block of this thread.
            JournalClosedError: the handle is closed.
        """
        self._ensure()
        self._refuse_in_batch("recover")
        with self._errors():
            return self._recover()

    def _recover(self) -> RecoveryReport:
        # This handle's exporting open ran the same check moments ago: not twice in a row.
        if not self._recently_checked():
            check_integrity(self._store, self.csv_path, full=True)
        integrity = "ok"
        # what this handle's exporting open did moments ago is this recovery's too
        lost, removed, stale_at_open = self._session_recovered()
        lost += self._expire_leases()
        exporter = self._exporter
        with self._reading() as conn:
            # never exported (an init killed before its export: no status columns yet)
            exported = _reads.exported_seq(conn)
            stale = exported is None or exported < _reads.last_seq(conn)
        missing = not self.csv_path.exists()  # deleted: an exporter writes after commits only
        stale = stale or missing or stale_at_open
        if exporter is not None and exporter.leading:
            # removed at this handle's take-over; reported once
            removed += exporter.removed_temp_files
            exporter.removed_temp_files = []
            if missing and not exporter.export_again(timeout=60):
                raise ExportError(f"{self.csv_path}: the exporter could not write the CSV")
        else:  # whoever exports removed them when taking over; if nobody does, we do
            helper = Exporter(
                self._store, self._settings, self.csv_path, self._settings.formula_guard
            )
            with self._gate.operation():
                try:
                    removed += helper.removed_temp_files if helper.try_lead() else []
                except OSError as exc:
                    raise ExportError(
                        f"{self.csv_path}: could not write the CSV: {reason(exc)}"
                    ) from exc
                helper.release()
        self._flush(None, not_for_stopped=True)  # a stopped exporter: said, not waited for
        removed += remove_leftovers(self.csv_path, self.journal_path)  # of backups, restores
        with self._reading() as conn:
            pending = _reads.pending_count(conn, time.time())
        report = RecoveryReport(integrity, tuple(lost), tuple(removed), stale, pending)
        log.info("journal_recovered", path=str(self.csv_path), report=report.lines())
        return report

    def backup(self) -> Path:
        """Back up the journal (SQLite's online backup, consistent even while workers
        record) and the CSV into a new folder of ``orders.csv.backups/``; return it. The
        newest ``keep_backups`` backups are kept.

        Raises:
            JournalCorruptError: the journal fails SQLite's integrity check: it is not
                backed up (a damaged backup would push sound ones out of retention).
            JournalIOError: the backup could not be written, the disk is full, say (nothing
                half-written is left).
            JournalClosedError: the handle is closed.
        """
        self._ensure()
        self._wait_for_session_backup()
        return self._backup_now()

    def backups(self) -> list[Path]:
        """Every backup folder of this journal, oldest first (once this handle's session
        backup, taken in the background at open, is done)."""
        self._wait_for_session_backup()
        return list_backups(self.csv_path)

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Give the rows this handle still holds back (``PENDING``), wait until the CSV
        shows every record, and close; closing twice is harmless.

        The wait is for a handle opened with ``export=True``: its exporter writes the last
        records; a handle standing by waits for the exporter of another handle (up to
        ``busy_timeout``, then logs ``csv_behind_at_close``), or exports them itself if
        none is left. A handle opened with ``export=False`` does not wait.

        Raises:
            BatchOpenError: called inside a ``batch()`` block of this thread (the block's
                records are not committed yet; close after it).
        """
        if self._closed and not self._closing:
            return
        self._refuse_in_batch("close")
        self._closed = True  # no new record, batch or claim from here on
        self._closing = True  # until done: a close a signal cut short is taken up again
        with HeldInterrupts() as held:
            if self._pid == _forking.PID:
                # (waits of up to busy_timeout: a signal cutting one short is handled then,
                # and the next close takes this one up again)
                with held.released():
                    self._held.wait_for_claims(self._options.busy_timeout)  # those under way
                if self._held:
                    try:
                        self._release(self._held.every(), "released")
                    except CsvJournalError as exc:  # their leases run out instead
                        log.warning("claims_not_released", path=str(self.csv_path), error=str(exc))
                with held.released():
                    self._wait_for_writes()
            self._shut()
            self._closing = False

    def _wait_for_writes(self) -> None:
        """Let the batches and commits of other threads that began before the close end:
        their records must reach the CSV too (up to ``busy_timeout``)."""
        if self._write_lock.acquire(timeout=self._options.busy_timeout):
            self._write_lock.release()
        else:
            log.warning("writes_in_flight_at_close", path=str(self.csv_path))

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
    # A program that never closed its journal still gets its last records into the CSV:
    # the exporters last, after the other handles gave their claims back.
    journals = [handle for handle in _forking.registered() if isinstance(handle, Journal)]
    for journal in sorted(journals, key=lambda handle: handle._options.export):
        journal.close()


atexit.register(_close_at_exit)
