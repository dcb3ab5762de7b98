"""The session an exporting open begins when its handle becomes the exporter: SQLite's full
integrity check, a backup, and the leases that ran out returned to ``PENDING``.

The check runs in the background while the exporter checks and renders the CSV (both only
read); before the exporter's first write the session waits for the check (a damaged journal
is refused before its backup, which would push sound ones out), starts the backup in the
background (a consistent snapshot whenever it is taken) and expires the lapsed leases.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import structlog
from sqlalchemy import Connection

from csvjournal import _reads
from csvjournal._background import Background
from csvjournal._dberrors import read_only_error
from csvjournal._forking import ForkGate
from csvjournal._leases import expiring_rows
from csvjournal._options import Options
from csvjournal._schema import driver
from csvjournal._settings import Settings
from csvjournal._values import format_timestamp
from csvjournal._writer import PENDING
from csvjournal.backup import PendingBackup, remove_leftovers
from csvjournal.recovery import check_integrity
from csvjournal.store import Store

__all__ = ["Session"]

log = structlog.get_logger(__name__)

# (the time leases lapse by, its stamp) -> (key, the lost worker) of each row given back
Expire = Callable[[float, str], list[tuple[str, str]]]


class Session:
    """One exporting open's session (see the module's docstring)."""

    def __init__(self, store: Store, options: Options, gate: ForkGate, expire: Expire) -> None:
        self._store = store
        self._options = options
        self._gate = gate
        self._expire = expire
        self._check: Background | None = None
        self._backup: Background | None = None
        self._checked_at: float | None = None
        # The leases the session returns are those lapsed when it began, stamped then: the
        # export that the check overlaps can show them as the first write will leave them.
        self._time = 0.0
        self._stamp = ""
        # what the session recovered, for the handle's next recover() to report (once)
        self.returned: list[tuple[str, str]] = []
        self.removed: list[Path] = []
        self.stale = False  # the CSV was behind the journal (the open's export caught up)

    def begin(self) -> None:
        """The handle became the exporter: start SQLite's full integrity check."""
        self._time = time.time()
        self._stamp = format_timestamp(datetime.fromtimestamp(self._time, UTC))
        csv_path = self._options.csv_path
        with self._gate.operation(), self._store.read() as conn:
            exported = _reads.exported_seq(conn)  # None: a journal never exported (just made)
            behind = exported is not None and exported < _reads.last_seq(conn)
        self.stale = behind or (exported is not None and not csv_path.exists())
        self._check = Background(
            "csvjournal-check", lambda: check_integrity(self._store, csv_path, full=True)
        )
        self._check.start()

    def preview(self, conn: Connection, settings: Settings) -> dict[int, tuple[str, list[str]]]:
        """The rows the session's first write will change, as ``pos -> (key, cells
        after)``: lapsed leases back to ``PENDING``, stamped with the session's time."""
        columns = _reads.column_names(conn)
        status = columns.index(settings.status_column)
        stamp = columns.index(settings.timestamp_column)
        after: dict[int, tuple[str, list[str]]] = {}
        for pos, key, cells_json in expiring_rows(driver(conn), self._time):
            cells = _reads.cells_of(columns, cells_json)
            cells[status], cells[stamp] = PENDING, self._stamp
            after[pos] = (key, cells)
        return after

    def confirm(self) -> list[str]:
        """Before the session's first write: wait for the check, start the backup, give
        the rows of workers whose leases ran out back to ``PENDING``; return their keys.

        Raises:
            JournalCorruptError: the journal failed the integrity check.
        """
        check, self._check = self._check, None
        if check is not None:
            check.result()
            self._checked_at = time.monotonic()
        for leftover in remove_leftovers(self._options.csv_path, self._options.journal_path):
            log.info("leftover_removed", path=str(leftover))
            self.removed.append(leftover)
        if self._options.keep_backups > 0:
            # a journal this process may not write fails its first write: no backup first
            # (each would push an older one out)
            error = read_only_error(self._options.journal_path)
            if error is not None:
                raise error
            self._start_backup()
        lost = self._expire(self._time, self._stamp)
        self.returned += lost
        if lost:
            log.info(
                "expired_leases_returned",
                path=str(self._options.csv_path),
                rows=len(lost),
                workers=sorted({worker for _, worker in lost}),
            )
        return [key for key, _ in lost]

    def _start_backup(self) -> None:
        options = self._options
        try:
            begun = PendingBackup(options.csv_path)  # the CSV as the session found it
        except OSError as exc:  # the job goes on; the error is loud
            log.error("session_backup_failed", path=str(options.csv_path), error=str(exc))
            return

        def finish() -> None:
            try:
                with self._gate.operation():  # no connection open across a fork
                    begun.finish(
                        options.journal_path,
                        keep=options.keep_backups,
                        busy_timeout=options.busy_timeout,
                        verify=False,  # the session's check passed a moment ago
                    )
            except (OSError, sqlite3.Error) as exc:
                log.error("session_backup_failed", path=str(options.csv_path), error=str(exc))

        self._backup = Background("csvjournal-backup", finish)
        self._backup.start()

    def take_recovered(self) -> tuple[list[tuple[str, str]], list[Path], bool]:
        """The leases the session returned, the leftovers it removed and whether it found
        the CSV behind, once (then none)."""
        returned, self.returned = self.returned, []
        removed, self.removed = self.removed, []
        stale, self.stale = self.stale, False
        return returned, removed, stale

    def abandon(self) -> None:
        """The open failed (the CSV was edited by hand, say): wait for the session's
        check and backup to end, their outcome unwanted, before the store is closed (a
        check still running would open a connection after, kept for good)."""
        for work in (self._check, self._backup):
            if work is not None:
                work.wait()
        self._check = self._backup = None

    def wait_for_backup(self) -> None:
        """Return once the session's backup, if one is being taken, is done."""
        backup, self._backup = self._backup, None
        if backup is not None:
            backup.result()

    def recently_checked(self, seconds: float = 60.0) -> bool:
        """Whether the session's integrity check passed ``seconds`` ago or less (so
        recovery right after it need not read the whole journal again)."""
        return self._checked_at is not None and time.monotonic() - self._checked_at <= seconds
