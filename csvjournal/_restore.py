"""``csvjournal.restore()``: put a backup's journal back and regenerate the CSV from it."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import structlog

from csvjournal import _forking
from csvjournal._atomicfile import fingerprint
from csvjournal._dberrors import journal_errors
from csvjournal._fsinfo import companion
from csvjournal._migrate import check_revision
from csvjournal._open import open as open_journal
from csvjournal._oslock import ExporterLock, exporter_pid, lock_path
from csvjournal._pids import described, holding, owner_tag
from csvjournal._readonly import ReadOnlyVisit, in_use
from csvjournal._schema import peek
from csvjournal.backup import (
    PendingBackup,
    check_backup,
    copy_journal,
    copy_uri,
    keep_for_good,
    prune_backups,
    read_copy,
    take_backup,
)
from csvjournal.csvio import read_csv
from csvjournal.errors import (
    BackupNotFoundError,
    CsvJournalError,
    JournalBusyError,
    JournalCorruptError,
    SettingsError,
)

__all__ = ["restore"]

log = structlog.get_logger(__name__)

_EXPORT_STATE = (
    "csv_digest",
    "csv_guard",
    "csv_guard_rules",
    "csv_pending",
    "csv_pending_guard",
    "csv_pending_guard_rules",
    "csv_pending_seq",
    "csv_pending_rows",
    "csv_rows",
    "csv_seq",
)


def _csv_fingerprint(csv: Path) -> str | None:
    try:
        with csv.open("rb") as handle:
            return fingerprint(iter(lambda: handle.read(1 << 20), b""))
    except FileNotFoundError:
        return None


def _put_in_place(source: Path, journal: Path, csv: Path) -> None:
    journal = Path(os.path.realpath(journal))  # a symlinked journal: the file it points to
    temp = journal.with_name(f".{journal.name}.restoring-{owner_tag()}")
    try:
        reader = sqlite3.connect(copy_uri(source), uri=True)
        try:
            # the journal replaced decides who may read it, else the backup's copy
            copy_journal(reader, temp, journal if journal.exists() else source)
        finally:
            reader.close()
        conn = sqlite3.connect(temp)
        try:  # the CSV is rewritten from this journal: forget what it last exported
            conn.executemany("DELETE FROM settings WHERE name = ?", [(n,) for n in _EXPORT_STATE])
            # ... but know the CSV now in place as csvjournal's own (what it shows unknown):
            # an export killed or cut off by a power loss before its rename must not leave
            # the old CSV looking like a hand edit.
            digest = _csv_fingerprint(csv)
            if digest is not None:
                conn.execute(
                    "INSERT INTO settings (name, value) VALUES ('csv_digest', ?)",
                    (json.dumps(digest),),
                )
            conn.commit()
        finally:
            conn.close()
    except BaseException:  # nothing was changed yet: leave nothing behind either
        for suffix in ("", "-journal"):
            Path(f"{temp}{suffix}").unlink(missing_ok=True)
        raise
    # The old journal's WAL must not be replayed into the restored one (it is in the
    # safety backup just taken).
    for suffix in ("-wal", "-shm", "-journal"):
        Path(f"{journal}{suffix}").unlink(missing_ok=True)
    os.replace(temp, journal)
    folder = os.open(journal.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _check_schema(source: Path) -> None:
    """Refuse a backup written by a newer csvjournal before anything changes.

    Raises:
        SchemaTooNewError: its schema revision is unknown here.
        JournalCorruptError: no journal in the file (an empty one).
    """
    with read_copy(source) as conn:
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master")]
        found = (
            conn.execute("SELECT version_num FROM alembic_version").fetchone()
            if ("alembic_version" in tables)
            else None
        )
    if not tables:  # (an empty file is an empty database to SQLite)
        raise JournalCorruptError(
            f"{source}: no journal in this file (it is empty); choose another backup"
        )
    check_revision(None if found is None else str(found[0]), tables, source)


def _key_column(journal: Path, *, copy: bool = False) -> object:
    """The key column stored in ``journal`` (a backup's ``copy``, or the live journal);
    ``None`` when it cannot be read (damaged)."""
    try:
        with read_copy(journal) if copy else peek(journal) as conn:
            found = conn.execute("SELECT value FROM settings WHERE name = 'key_column'")
            row = found.fetchone()
    except sqlite3.Error:
        return None
    return None if row is None else json.loads(row[0])


def _check_same_job(source: Path, journal: Path, csv: Path) -> None:
    """Refuse a backup of another job's journal (another key column): restored, it would
    replace every row of this one. A journal too damaged to tell: the CSV's header must
    hold the backup's key column.

    Raises:
        SettingsError: the key columns differ.
    """
    if not journal.exists():
        return
    theirs, ours = _key_column(source, copy=True), _key_column(journal)
    if theirs is not None and ours is not None and theirs != ours:
        raise SettingsError(
            f"{source}: a backup of another job (key column {theirs!r}, this journal's is"
            f" {ours!r}); nothing changed"
        )
    header = _csv_header(csv) if theirs is not None and ours is None else None
    if header is not None and theirs not in header:
        raise SettingsError(
            f"{source}: a backup of another job (key column {theirs!r}, which {csv}"
            " has not); nothing changed"
        )


def _csv_header(csv: Path) -> list[str] | None:
    """The CSV's header, or None when it cannot be read as a CSV."""
    try:
        return read_csv(csv).header
    except (CsvJournalError, OSError, UnicodeError):
        return None


@contextmanager
def _writers_held_off(journal: Path) -> Iterator[None]:
    """Hold SQLite's write lock on the journal about to be replaced, from before its safety
    backup until the restored one is in place: a worker that opened it after the check
    that nobody has it open would otherwise commit into the old journal after the backup,
    and lose the record. Its commits wait instead, and then fail (the journal was
    replaced). A journal too damaged to lock is written by nobody either."""
    if not journal.exists():
        yield
        return
    guard = sqlite3.connect(journal, timeout=30.0, isolation_level=None)
    try:
        try:
            guard.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:
            log.warning("restore_lock_not_taken", path=str(journal), error=str(exc))
        yield
    finally:
        with suppress(sqlite3.Error):
            if guard.in_transaction:
                guard.execute("ROLLBACK")
        guard.close()


def _save_current(csv: Path, journal: Path) -> Path:
    """Back up the journal about to be replaced; a journal too damaged for SQLite to read
    (the usual reason to restore) is kept as its files."""
    try:
        # whatever state it is in: the journal replaced is often a damaged one
        return take_backup(csv, journal, keep=0, busy_timeout=30.0, verify=False)
    except sqlite3.DatabaseError as exc:
        log.warning("damaged_journal_saved_as_files", path=str(journal), error=str(exc))
        return PendingBackup(csv).finish_as_files(journal)


def restore(
    csv_path: str | os.PathLike[str],
    backup: str | os.PathLike[str],
    *,
    journal_path: str | os.PathLike[str] | None = None,
    keep_backups: int = 5,
    formula_guard: bool | None = None,
) -> Path | None:
    """Restore the journal of ``csv_path`` from the backup folder ``backup`` and rewrite
    the CSV from it. The current journal and CSV are backed up first (a CSV without a
    journal alone); that backup's folder is returned (``None`` when there was neither).
    Stop every worker first.

    Raises:
        BackupNotFoundError: ``backup`` is not a backup folder of this journal.
        SettingsError: ``backup`` is of another job (another key column; nothing changed).
        JournalCorruptError: the backup fails SQLite's integrity check (nothing changed).
        JournalBusyError: another process exports, or has the journal open for two
            seconds (one that only looks for moments is waited out; nothing changed).
        JournalIOError: a file could not be read or written (the disk is full, say).
    """
    csv = Path(csv_path)
    journal = Path(journal_path) if journal_path is not None else Path(f"{csv}.journal")
    visit = ReadOnlyVisit(journal)  # a user who may not write it is refused, leaving nothing
    try:
        with journal_errors(journal, csv, f"restore {backup}"):
            return _restore(csv, Path(backup), journal, keep_backups, formula_guard)
    finally:
        if not _forking.open_here(journal):
            visit.end()


# A process that opens the journal for moments (status --watch's looks) lets go within this
_HOLD_SECONDS = 2.0


def _held(journal: Path) -> bool:
    """Whether another process holds ``journal`` open for the next :data:`_HOLD_SECONDS`:
    one that opens it only for moments is waited out."""
    deadline = time.monotonic() + _HOLD_SECONDS
    while in_use(journal):
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.01)
    return False


def _restore(
    csv: Path, backup: Path, journal: Path, keep_backups: int, formula_guard: bool | None
) -> Path | None:
    if backup.resolve() == journal.parent.resolve():
        raise BackupNotFoundError(f"{backup}: that is the journal's own folder, not a backup")
    source = check_backup(backup, journal.name)
    _check_schema(source)
    _check_same_job(source, journal, csv)
    if _forking.open_here(journal):  # before touching the -shm: closing it drops SQLite's locks
        raise JournalBusyError(f"{journal}: this process has the journal open; close it first")
    lock_path(csv).parent.mkdir(exist_ok=True)
    lock = ExporterLock(lock_path(csv))
    if not lock.acquire():
        pid = exporter_pid(csv)
        who = f" ({described(pid)})" if pid is not None else ""
        raise JournalBusyError(f"{csv}: another process exports this journal{who}; close it first")
    try:
        if _held(journal):
            companions = [companion(journal, suffix) for suffix in ("", "-wal", "-shm")]
            who = "; ".join(map(described, holding(companions)))
            raise JournalBusyError(
                f"{journal}: another process has the journal open{f' ({who})' if who else ''};"
                " stop it"
            )
        safety = None
        with _writers_held_off(journal):
            if journal.exists():  # pruned only once restored: retention might drop ``backup``
                safety = _save_current(csv, journal)
            elif csv.exists():  # a CSV without a journal: its rows may be found nowhere else
                safety = PendingBackup(csv).finish_as_files(journal)
                keep_for_good(safety, "the CSV, without a journal, before a restore")
            _put_in_place(source, journal, csv)
    finally:
        lock.release()
    # not the backup just restored, even the oldest, now or later: it may be wanted again
    try:
        keep_for_good(backup)
    except OSError as exc:  # (a read-only copy: retention cannot remove it either)
        log.warning("restored_backup_not_marked", path=str(backup), error=str(exc))
    prune_backups(csv, keep_backups)
    # takes the exporter role and writes the CSV anew (just backed up: no session backup)
    open_journal(csv, journal_path=journal, formula_guard=formula_guard, keep_backups=0).close()
    log.info("journal_restored", path=str(journal), backup=str(backup), safety=str(safety))
    return safety
