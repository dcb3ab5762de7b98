"""The single exporter: regenerates the CSV from the journal, atomically, after commits.

One handle per journal exports at a time, across processes: it holds a lock that the OS
releases when its process dies (``orders.csv.backups/exporter.lock``); the other exporting
handles stand by and one takes over within about a second. The exporter notices commits by
any process by polling the newest sequence number, coalesces bursts, and writes the CSV
atomically (:class:`~csvjournal._export.ExportWriter`, which also notes each export in the
journal so that a CSV left by an exporter killed mid-export never looks edited). A hand
edit made while it runs is never overwritten: the exports stop, saying what to do, until the
edit is merged or the file deleted (:class:`~csvjournal._handedits.CsvGuard`).
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog
from sqlalchemy.exc import SQLAlchemyError

from csvjournal._export import ExportWriter, Preview, note_failure
from csvjournal._forking import ForkGate
from csvjournal._handedits import block, check_csv, file_identity
from csvjournal._interrupts import start_thread
from csvjournal._oslock import ExporterLock, lock_path
from csvjournal._rendercache import SAVE_CHUNK
from csvjournal._settings import Settings, read_value
from csvjournal.csvio import remove_temp_files
from csvjournal.errors import CsvChangedError, CsvJournalError
from csvjournal.store import Store

__all__ = ["POLL_SECONDS", "Exporter", "Preview"]

log = structlog.get_logger(__name__)

POLL_SECONDS = 0.01
# A second after its last export, with no rendered records left to store, it polls five
# times less often: a wake-up costs CPU (~50 µs on a VM) however little a poll does.
_QUIET_AFTER_SECONDS = 1.0
_QUIET_POLL_SECONDS = 0.05
# After an export, a pause, and exports at most every 50 ms: back to back, exports would
# take the disk from the writers (each writes and syncs the whole CSV, the journal's note
# and the folder: a small CSV many times a second) and, in its process, their GIL.
_AFTER_EXPORT_SECONDS = 0.02
_EVERY_SECONDS = 0.05
_STANDBY_SECONDS = 0.5
# Rendered records are stored after an export at most once a second, unless more than this
# many wait (see _export_or_back_off); else only while no commits come, and at close.
_SAVE_EVERY_SECONDS = 1.0
_SAVE_BACKLOG = 100_000
_BACKOFF_FIRST_SECONDS = 0.05  # the first retry of a failed export, doubling each time
_BACKOFF_CAP_SECONDS = 30.0
# While a hand edit blocks the exports, how often the CSV is looked at again (a stat).
_BLOCKED_SECONDS = 0.5


# What makes an export fail, to be tried again later: the CSV's disk or folder, a value the
# CSV's encoding lacks, the journal's disk (a full disk fails the note of what was written).
_FAILURES = (OSError, UnicodeError, SQLAlchemyError, sqlite3.Error)


class Exporter(ExportWriter):
    """The exporting side of one handle: the role's lock, the thread, retries, standing by."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        csv_path: Path,
        formula_guard: bool,
        gate: ForkGate | None = None,
    ) -> None:
        super().__init__(store, settings, csv_path, formula_guard)
        self._gate = gate or ForkGate()
        self._lock = ExporterLock(lock_path(csv_path))  # made when first taken
        self._failures = 0
        self._saved_at = 0.0  # monotonic time of the last records stored after an export
        self._saving_failed = False  # said once until the records are stored again
        self._blocked_file: tuple[int, ...] | None = None  # the hand edit noted as blocking
        self._thread: threading.Thread | None = None
        self.removed_temp_files: list[Path] = []

    # -- taking the role -------------------------------------------------------------------

    def try_lead(
        self,
        on_lead: Callable[[], object] | None = None,
        before_write: Callable[[], object] | None = None,
        preview: Preview | None = None,
        *,
        retry: bool = False,
    ) -> bool:
        """Become the exporter if no other handle is; check and refresh the CSV then.
        With ``retry`` (the exporter thread's role) a CSV that cannot be written now (a
        full disk, a read-only folder) is logged and left to the thread to write later.
        ``on_lead`` runs first, once the lock is ours; ``before_write`` runs once before
        the first write to the journal or the CSV (the session's check, backup, recovery:
        the export's rendering overlaps the check ``on_lead`` started). ``preview`` says
        which rows ``before_write`` will change and how (``pos -> (key, cells)``), so the
        first export shows them; ``before_write`` returns the keys it changed.

        Raises:
            CsvChangedError: the CSV was edited by hand since the last export (the lock is
                released again). Whatever the hooks raise, likewise.
        """
        if not self._lock.acquire():
            return False
        self._before_write, self._preview = before_write, preview
        try:
            if on_lead is not None:
                on_lead()
            self._take_over(retry)
        except BaseException:
            self._lock.release()
            raise
        finally:
            self._before_write, self._preview = None, None
        self.leading = True
        return True

    def release(self) -> None:
        """Give up the exporter role taken by :meth:`try_lead` without a thread (storing
        the records it rendered first)."""
        if self.leading:
            with self._gate.operation():
                self._save_lines()
        self.leading = False
        self._lock.release()

    def forget_after_fork(self) -> None:
        """In a forked child: this process is not the exporter; the parent still is."""
        self.leading = False
        self._lock.forget_after_fork()

    def _take_over(self, retry: bool) -> None:
        for leftover in remove_temp_files(self._csv_path, dead_only=True):
            log.info("temp_file_removed", path=str(leftover))
            self.removed_temp_files.append(leftover)
        with self._store.read() as conn:  # an open since this handle's may have changed it
            self.follow_guard(conn)
        current = check_csv(self._store, self._csv_path, self._rendered, self._formula_guard)
        self._guard.placed()
        if current is None:
            exported = self._export_first(retry)
        else:  # the CSV already shows everything: render it when something changes
            self._first_write()
            self.exported_seq = current
            exported = True
        if exported and self._newest() > self.exported_seq:  # recovery changed rows
            self._export_first(retry)
        # A first rendering may be all of the CSV (an import, a new column): stored at once,
        # the next exporter need not render it again, nor wait for the chunks.
        self._save_lines()

    def _export_first(self, retry: bool) -> bool:
        """The take-over's export; whether it was written. See :meth:`try_lead`."""
        try:
            self.export_now()
        except _FAILURES as exc:
            if not retry:
                raise
            self._first_write()  # the session's backup and recovery need no CSV
            self._failed(exc)
            return False
        return True

    def _failed(self, exc: Exception) -> None:
        """An export that failed (the thread tries again, backing off): said once."""
        self._missed(exc)
        self._failures += 1
        if self._failures == 1:
            log.error("csv_export_failed", path=str(self._csv_path), error=str(exc))
        try:  # each time (backing off, at most every 30 s): a flush() waits for the next
            with self._store.write(synced=False) as conn:
                note_failure(conn, str(exc), self._failures)
        except _FAILURES:  # the journal's own disk: other processes hear nothing
            pass

    def start(self, leading: bool) -> None:
        """Run the exporter thread: exporting if ``leading``, else standing by."""
        thread = threading.Thread(
            target=self._run, args=(leading,), name="csvjournal-exporter", daemon=True
        )
        self._thread = thread
        start_thread(thread)

    # -- the thread ------------------------------------------------------------------------

    def _run(self, leading: bool) -> None:
        failed = False  # said once
        edited: tuple[object, ...] | None = None  # the hand-edited CSV a take-over met
        while True:
            while not leading:
                if self._stopped(_STANDBY_SECONDS):
                    return
                try:
                    with self._gate.operation():
                        if edited is not None and self._edit_state() == edited:
                            continue  # not merged, nor deleted, nor saved again: stand by
                        leading = self.try_lead(retry=True)
                except CsvChangedError as exc:
                    if edited is None:
                        log.error("csv_changed_by_hand", path=str(self._csv_path), error=str(exc))
                    with self._gate.operation():
                        edited = self._edit_state()
                    continue
                except _FAILURES as exc:  # no lock file to be made now: stand by on
                    if not failed:
                        log.warning(
                            "exporter_standby_failed", path=str(self._csv_path), error=str(exc)
                        )
                    failed = True
                if leading:
                    log.info("exporter_took_over", path=str(self._csv_path))
            if self._export_loop():
                return
            leading = False

    def _edit_state(self) -> tuple[object, ...]:
        """The CSV's file and the exports the journal knows: a take-over refused for a hand
        edit is tried again once one of them changes (a merge, the file deleted or saved)."""
        known: tuple[object, ...] = ()
        try:
            with self._store.read() as conn:
                known = (read_value(conn, "csv_digest"), read_value(conn, "csv_pending"))
        except _FAILURES:
            pass
        return file_identity(self._csv_path), *known

    def _export_loop(self) -> bool:
        """Export until asked to stop (True), or until the role is lost (False)."""
        try:
            self._warm_up()
            delay = POLL_SECONDS
            version = None
            exported_at = checked_at = time.monotonic()
            while not self._stopped(delay):
                # Its lock file deleted, and another took the new one? Looked at while idle
                # (so newcomers find a lock file again) and before each export.
                if time.monotonic() - checked_at >= _STANDBY_SECONDS:
                    checked_at = time.monotonic()
                    if not self._keep_role():
                        return False
                with self._gate.operation():  # no connection may be open across a fork
                    # A CSV deleted by hand is written anew, commits or not; one edited
                    # by hand is found at once (flush() and status say so), not at the
                    # next commit's export.
                    idle = not (self._forced or self._failures or self.blocked)
                    idle = idle and self._csv_path.exists() and not self._guard.moved()
                    # The newest event is read only if someone committed since the last poll.
                    try:
                        seen, version = version, self._store.data_version()
                        idle = idle and (seen == version or not self.behind(self.exported_seq))
                    except _FAILURES:  # a full disk, say: the export fails and backs off
                        version, idle = None, False
                    if idle:
                        self._save_lines(SAVE_CHUNK)  # quiet now: a chunk a poll
                        delay = self._quiet_delay(exported_at)
                        continue
                    if not self._keep_role():
                        return False
                    # Commits that came during an export go out at once, not a poll later.
                    delay = self._export_or_back_off()
                    exported_at = time.monotonic()
            with self._gate.operation():  # the last commits before close
                self._export_last()
            return True
        finally:
            self.release()

    def _keep_role(self) -> bool:
        if self._lock.keep():
            return True
        log.warning("exporter_role_lost", path=str(self._csv_path))
        return False

    def _export_last(self) -> None:
        try:
            behind = self.behind(self.exported_seq)
        except _FAILURES:
            behind = True
        if behind or self._failures or not self._csv_path.exists():
            self._export_or_back_off()
        self._save_lines()

    def _quiet_delay(self, exported_at: float) -> float:
        quiet = time.monotonic() - exported_at >= _QUIET_AFTER_SECONDS
        return _QUIET_POLL_SECONDS if quiet and not self._rendered.unsaved else POLL_SECONDS

    def _warm_up(self) -> None:
        """Render the CSV now if the take-over found it current and left it unrendered:
        else the first commit would wait for the whole rendering (seconds at a million
        rows) before its export."""
        if self._rendered.seq >= 0:
            return
        try:
            with self._gate.operation(), self._store.read() as conn:
                self._rendered.refresh(conn)
        except (CsvJournalError, SQLAlchemyError, sqlite3.Error) as exc:
            # The first export renders it instead, from scratch.
            log.warning("csv_rendering_deferred", path=str(self._csv_path), error=str(exc))

    def _save_lines(self, limit: int | None = None) -> None:
        """Store records rendered here (all, or the first ``limit``) for the next exporter,
        after an export, never inside one: the next CSV need not wait for it. Best effort:
        a record not saved costs the next exporter only its rendering."""
        rendered = self._rendered
        if not rendered.unsaved and not rendered.format_changed:
            return
        try:
            with self._store.write(synced=False) as conn:
                rendered.save_lines(conn, limit=limit)
        except (CsvJournalError, SQLAlchemyError, sqlite3.Error) as exc:
            if not self._saving_failed:
                log.warning("rendered_lines_not_saved", path=str(self._csv_path), error=str(exc))
            self._saving_failed = True
        else:
            self._saving_failed = False

    def _export_or_back_off(self) -> float:
        started = time.monotonic()
        try:
            self.export_now()
        except CsvChangedError as exc:  # a hand edit while we run: keep it, say what to do
            if self.blocked is None:
                log.error("csv_changed_by_hand", path=str(self._csv_path), error=str(exc))
            # Noted again for each file saved: a note about the first file saved is void
            # once another replaces it, and the other processes would wait for exports.
            if self.blocked is None or file_identity(self._csv_path) != self._blocked_file:
                self._note_block(exc)
            self._missed(exc)
            return _BLOCKED_SECONDS
        except _FAILURES as exc:
            self._failed(exc)
            wait = min(_BACKOFF_CAP_SECONDS, _BACKOFF_FIRST_SECONDS * 2 ** (self._failures - 1))
            return float(wait * random.uniform(0.5, 1.0))
        if self._failures:
            log.info("csv_export_recovered", path=str(self._csv_path), attempts=self._failures)
            self._failures = 0
        if self.blocked is not None:
            log.info("csv_exports_resumed", path=str(self._csv_path))
            self.blocked = None
        # After the rename (the CSV need not wait for it), but rarely: each stored record is
        # a page of WAL, and under load the writers need the disk more than the next exporter
        # needs the records. The backlog is held in memory, so a large one goes out sooner.
        now = time.monotonic()
        backlog = len(self._rendered.unsaved)
        if backlog > _SAVE_BACKLOG or now - self._saved_at >= _SAVE_EVERY_SECONDS:
            self._save_lines(SAVE_CHUNK)
            self._saved_at = now = time.monotonic()
        return max(_AFTER_EXPORT_SECONDS, _EVERY_SECONDS - (now - started))

    def _note_block(self, exc: CsvChangedError) -> None:
        """Note, for every process, that the hand edit on disk now stops the exports."""
        try:
            with self._store.write(synced=False) as conn:
                # a merge of the file between the check and now: no stop (the next look
                # exports), or it would outlive the merge that ended it
                if self._guard.still_refused(conn):
                    self._blocked_file = block(conn, self._csv_path, str(exc))
        except _FAILURES as error:  # a full disk: other processes see no note
            log.warning("csv_block_not_noted", path=str(self._csv_path), error=str(error))

    # -- stop ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Export what is left (if leading), stop the thread and release the lock."""
        self._ask_to_stop()
        if self._thread is not None and self._thread.ident is not None:
            self._thread.join()
        elif self.leading:  # its thread never ran (a start cut short): the lock is ours
            self.release()
