"""A handle's upkeep of the CSV and the journal: flush, copies, recovery, backups.

The part of :class:`~csvjournal.journal.Journal` that keeps the files right rather than
recording: waiting for the CSV to show the commits, writing copies, the after-crash
recovery and the backups.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import structlog

from csvjournal import _reads
from csvjournal._atomicfile import reason
from csvjournal._claims import Claims
from csvjournal._flush import check_copy_target, export_to, flush_csv
from csvjournal._handedits import refuse_hand_edits
from csvjournal._oslock import exporter_alive
from csvjournal._schema import driver
from csvjournal.backup import list_backups, remove_leftovers
from csvjournal.errors import ExportError
from csvjournal.exporter import Exporter
from csvjournal.recovery import RecoveryReport, check_integrity

__all__ = ["Upkeep"]

log = structlog.get_logger(__name__)


class Upkeep(Claims):
    """Flush, export, recover and back up (see :class:`~csvjournal.journal.Journal`)."""

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
            CsvChangedError: the CSV was edited by hand (refused before any lease is
                returned: see ``csvjournal import --merge``).
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
        exporter = self._exporter
        if not (exporter is not None and exporter.leading) and not exporter_alive(self.csv_path):
            # its export at the end refuses a CSV edited by hand: before anything changes
            with self._gate.operation(), self._store.write() as conn:  # (no export noted
                refuse_hand_edits(driver(conn), self.csv_path)  # meanwhile, under its lock)
        lost += self._expire_leases()
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
