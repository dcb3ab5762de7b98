"""What recovery found and did, and the integrity check it starts with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import DBAPIError

from csvjournal.backup import brief, newest_backup_hint
from csvjournal.errors import JournalCorruptError
from csvjournal.store import Store, is_busy

__all__ = ["RecoveryReport", "check_integrity"]


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """The outcome of :meth:`Journal.recover` (and of the recovery an exporting open does).

    Attributes:
        integrity: SQLite's verdict on the journal: ``"ok"`` (anything else is raised).
        expired: ``(key, lost worker)`` for every lease that had run out and was returned
            to ``PENDING``, in CSV order.
        temp_files_removed: temporary export files left by a killed exporter.
        csv_was_stale: the CSV did not show every commit, or was missing, and was
            regenerated.
        pending: how many rows are pending after recovery.
    """

    integrity: str
    expired: tuple[tuple[str, str], ...]
    temp_files_removed: tuple[Path, ...]
    csv_was_stale: bool
    pending: int

    def lines(self) -> list[str]:
        """The report as short sentences, for people."""
        out = [f"integrity check: {self.integrity}"]
        workers = sorted({worker for _, worker in self.expired})
        out.append(
            f"expired leases returned to PENDING: {len(self.expired)}"
            + (f" (lost workers: {', '.join(workers)})" if workers else "")
        )
        out.append(f"temporary files removed: {len(self.temp_files_removed)}")
        out.append("CSV: " + ("regenerated" if self.csv_was_stale else "already current"))
        out.append(f"pending rows: {self.pending}")
        return out


_CHECK_MMAP_BYTES = 1 << 30


def check_integrity(store: Store, csv_path: Path, *, full: bool) -> str:
    """Run SQLite's ``integrity_check`` (``quick_check`` unless ``full``); return ``"ok"``.

    Raises:
        JournalCorruptError: the journal is damaged; the message names the newest backup.
    """
    pragma = "integrity_check" if full else "quick_check"
    try:
        with store.read() as conn:
            # Mapped pages spare the check a read() per page (a tenth of its time on a big
            # journal); the mapping is given up again, as the pooled connection goes back.
            conn.exec_driver_sql(f"PRAGMA mmap_size={_CHECK_MMAP_BYTES}")
            try:
                problems = [str(row[0]) for row in conn.exec_driver_sql(f"PRAGMA {pragma}")]
            finally:
                conn.exec_driver_sql("PRAGMA mmap_size=0")
    except DBAPIError as exc:  # damage SQLite meets before it can report it
        if is_busy(exc):
            raise
        problems = [str(exc.orig)]
    if problems != ["ok"]:
        raise JournalCorruptError(
            f"{store.path}: the journal fails SQLite's {pragma}"
            f" ({brief(problems)}); {newest_backup_hint(csv_path, store.path)}"
        )
    return "ok"
