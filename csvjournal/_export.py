"""One export: the CSV rendered from the journal and put in place atomically.

Before the rename it notes in the journal which export is about to appear
(``csv_pending``), and after it which sequence number the CSV shows (``csv_seq``): so a CSV
that matches neither is a hand edit, never the trace of an exporter killed mid-export. The
role, the lock and the thread around it are :class:`~csvjournal.exporter.Exporter`'s.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

import structlog
from sqlalchemy import Connection

from csvjournal import _reads
from csvjournal._background import Background
from csvjournal._exportsignals import ExportSignals
from csvjournal._handedits import CsvGuard
from csvjournal._rendercache import RenderedCsv
from csvjournal._settings import Settings, forget_values, read_value, stored_guard, write_value
from csvjournal.csvio import EXCEL_MAX_ROWS, GUARD_RULES, replace_with, sync_file, write_temp
from csvjournal.store import Store

__all__ = ["ExportWriter", "Preview", "export_failure", "failure_text", "note_failure"]

log = structlog.get_logger(__name__)

# The rows a session's first write will change, read in the export's snapshot.
Preview = Callable[[Connection], dict[int, tuple[str, list[str]]]]


def note_failure(conn: Connection, error: str, failures: int) -> None:
    """Note in the journal that this process's exporter could not write the CSV, for the
    ``failures``-th time in a row (cleared by the next export that works): a flush() of
    another process then hears why the CSV waits."""
    write_value(conn, "csv_failed", {"error": error, "pid": os.getpid(), "failures": failures})


def export_failure(conn: Connection) -> dict[str, object] | None:
    """The note of the exporter's last export, while exports fail (see :func:`note_failure`)."""
    note = read_value(conn, "csv_failed")
    return note if isinstance(note, dict) else None


def failure_text(note: dict[str, object]) -> str:
    """What an :func:`export_failure` note says."""
    return f"the exporter (process {note.get('pid')}) could not write it: {note.get('error')}"


class ExportWriter(ExportSignals):
    """Writes the CSV of one journal, an export at a time (the caller holds the role)."""

    def __init__(
        self, store: Store, settings: Settings, csv_path: Path, formula_guard: bool
    ) -> None:
        super().__init__()
        self._store = store
        self._settings = settings
        self._csv_path = csv_path
        self._formula_guard = formula_guard
        self._guard = CsvGuard(store, csv_path)
        self._before_write: Callable[[], object] | None = None
        self._preview: Preview | None = None
        self._warned_rows = False
        self._rendered = RenderedCsv(settings.dialect, formula_guard)

    @property
    def formula_guard(self) -> bool:
        """The formula guard of this exporter's renderings (see :meth:`follow_guard`)."""
        return self._formula_guard

    def behind(self, exported: int) -> bool:
        """Whether the CSV, showing event ``exported``, lacks a commit, or shows the
        formula guard another open turned on or off since, or no state of the journal
        (a merge of a hand edit: a commit with no record, say)."""
        with self._store.read() as conn:
            return (
                _reads.last_seq(conn) > exported
                or stored_guard(conn) != self._formula_guard
                or _reads.exported_seq(conn) is None
            )

    def follow_guard(self, conn: Connection) -> None:
        """Take the formula guard as the journal stores it now: another handle's open may
        have turned it on or off since this one opened. Every record is then rendered
        anew (the stored ones suit the other guard)."""
        stored = stored_guard(conn)
        if stored != self._formula_guard:
            log.info("formula_guard_followed", path=str(self._csv_path), formula_guard=stored)
            self._formula_guard = stored
            self._rendered = RenderedCsv(self._settings.dialect, stored)

    def _first_write(self) -> object:
        hook, self._before_write = self._before_write, None
        return None if hook is None else hook()

    def _newest(self) -> int:
        with self._store.read() as conn:
            return _reads.last_seq(conn)

    def export_now(self) -> None:
        """Regenerate the CSV from the journal now (the caller holds the lock).

        Raises:
            OSError: the CSV could not be written (the old one stays whole).
            CsvChangedError: the CSV was edited by hand while this exporter ran (left as
                it is).
        """
        self._guard.check()
        planned: dict[int, tuple[str, list[str]]] = {}
        with self._store.read() as conn:
            self.follow_guard(conn)
            rendered = self._rendered
            rendered.refresh(conn)
            if self._preview is not None and self._before_write is not None:
                planned = self._preview(conn)
        shown = rendered.show({pos: cells for pos, (_, cells) in planned.items()})
        if len(rendered) + 1 > EXCEL_MAX_ROWS and not self._warned_rows:
            self._warned_rows = True
            log.warning("excel_row_limit_exceeded", path=str(self._csv_path), rows=len(rendered))
        temp, written = write_temp(self._csv_path, rendered.chunks(), sync=False)
        # The file goes to disk while the journal notes that it is about to appear: two
        # fsyncs at once, both done before the rename.
        syncing = Background("csvjournal-fsync", lambda: sync_file(temp))
        try:
            syncing.start()
            changed = self._first_write()
            if planned and not self._went_as_planned(planned, changed):
                syncing.result()
                temp.unlink()
                rendered.unshow(shown)  # rendered again from the journal, as it now is
                self.export_now()
                return
            # Synced after the write lock is let go, as group commits are: the writers of
            # every process need not wait for this fsync.
            with self._store.write(synced=False) as conn:
                unchanged = read_value(conn, "csv_digest") == written and self._csv_path.exists()
                if not unchanged:  # a CSV with this fingerprint is about to appear
                    write_value(conn, "csv_pending", written)
                    write_value(conn, "csv_pending_seq", rendered.seq)
                    write_value(conn, "csv_pending_rows", len(rendered))
                    write_value(conn, "csv_pending_guard", self._formula_guard)
                    write_value(conn, "csv_pending_guard_rules", GUARD_RULES)
            if not unchanged and self._store.durability == "full":
                self._store.sync_wal()
            syncing.result()
            self._guard.check()  # once more: the fsyncs took a while
        except BaseException:
            with contextlib.suppress(OSError):
                syncing.result()
            temp.unlink(missing_ok=True)
            raise
        self._put_in_place(temp, written, unchanged)

    def _put_in_place(self, temp: Path, written: str, unchanged: bool) -> None:
        """Rename the export ``temp`` over the CSV (unless the CSV has these bytes already)
        and note what the CSV now shows."""
        rendered = self._rendered
        if unchanged:
            temp.unlink()
        else:
            self._guard.placed(replace_with(temp, self._csv_path))
        # Not synced: lost in a power cut, the CSV still matches csv_pending (synced before
        # the rename), so it is known, not a hand edit; and csv_seq only makes flush() and
        # the next exporter export once more.
        with self._store.write(synced=False) as conn:
            write_value(conn, "csv_digest", written)
            write_value(conn, "csv_seq", rendered.seq)
            write_value(conn, "csv_rows", len(rendered))
            write_value(conn, "csv_guard", self._formula_guard)
            write_value(conn, "csv_guard_rules", GUARD_RULES)  # how a merge reads its sheet
            # a failure noted by whichever exporter (a backup restored, say) is over
            done = ("csv_failed", "csv_blocked") if self.blocked is not None else ("csv_failed",)
            forget_values(conn, *done)
        self._exported(rendered.seq)

    def _went_as_planned(self, planned: dict[int, tuple[str, list[str]]], changed: object) -> bool:
        """Whether the first write changed exactly the rows previewed and nothing else was
        committed since the rendering's snapshot; then the rendering is current."""
        keys = sorted(key for key, _ in planned.values())
        if not isinstance(changed, list) or sorted(changed) != keys:
            return False
        newest = self._newest()
        if newest != self._rendered.seq + len(keys):  # one event per row, nothing else
            return False
        self._rendered.seq = newest
        return True
