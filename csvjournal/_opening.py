"""What a handle's open does first: read the CSV a new journal imports, open the store.

Kept apart from :mod:`csvjournal._handle` (the handle's lifetime) because these steps run
before the handle has a store or settings, and clean up after themselves when they fail:
an open refused leaves nothing behind that it made.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import structlog
from sqlalchemy import Connection

from csvjournal._atomicfile import create_like, is_empty, remove_quietly
from csvjournal._dberrors import journal_errors
from csvjournal._fsinfo import wal_written
from csvjournal._handedits import refuse_hand_edits
from csvjournal._importer import check_keys, check_own_columns, unfinished
from csvjournal._options import Options
from csvjournal._schema import driver
from csvjournal._settings import refuse_conflicts
from csvjournal.backup import backups_folder, keep_for_good, take_backup
from csvjournal.csvio import ParsedCsv, read_csv
from csvjournal.errors import CsvJournalError, JournalBusyError, JournalIOError
from csvjournal.store import Store, remove_journal_files

__all__ = [
    "backup_now",
    "before_settings_change",
    "before_upgrade",
    "open_store",
    "source_to_import",
]

log = structlog.get_logger(__name__)


def source_to_import(options: Options, created: bool) -> ParsedCsv | None:
    """The CSV a new journal imports, read and checked before anything exists; ``None``
    when there is none to import. A journal whose creation never finished imports it too
    (if another process is creating it right now, it finishes first, and the open finds
    the journal made).

    Raises :class:`~csvjournal.errors.CsvFormatError` (or another
    :class:`~csvjournal.errors.CsvJournalError`) for a CSV that cannot be imported."""
    if not (created or unfinished(options.journal_path)) or not options.csv_path.exists():
        return None
    source = read_csv(options.csv_path, encoding=options.encoding, key=options.key)
    check_keys(
        options.csv_path, source, options.key or "", formula_guard=bool(options.formula_guard)
    )
    check_own_columns(
        options.csv_path,
        source,
        [str.__str__(options.status_column), str.__str__(options.timestamp_column)],
    )
    return source


def open_store(
    options: Options,
    created: bool,
    source: ParsedCsv | None,
    before_upgrade: Callable[[Connection], None],
) -> tuple[Store, list[Path], bool]:
    """Open (or create) the journal's store. Also return what a failed creation must
    remove again (the writers' queue makes its lock file, in a folder perhaps new), and
    whether this open made the journal's file (another process may be making it at the
    same moment: never ours to remove).

    Raises :class:`~csvjournal.errors.JournalIOError` when the journal cannot be created,
    and the store's errors (a damaged journal's message names the backup)."""
    folder = backups_folder(options.csv_path)
    made = [path for path in (folder / "writer.lock", folder) if not path.exists()]
    journal = options.journal_path
    # the CSV's data, readable by the same people
    try:
        ours = created and create_like(journal, options.csv_path if source else None)
    except OSError as exc:  # its folder read-only or missing, say
        raise JournalIOError(
            f"{journal}: cannot create the journal ({exc.strerror or exc})"
        ) from exc
    try:
        with journal_errors(options.journal_path, options.csv_path):
            store = Store(
                journal,
                durability=options.durability,
                busy_timeout=options.busy_timeout,
                allow_network_fs=options.allow_network_fs,
                before_upgrade=before_upgrade,
                queue_path=folder / "writer.lock",
            )
    except BaseException as exc:
        # A full disk, say: nothing written in. Not while another process writes it: a
        # second init at once, its schema and rows still in the -wal (the file empty), it
        # held us off (busy): removed, its journal lost its -wal under it.
        if (
            ours
            and not isinstance(exc, JournalBusyError)
            and (
                isinstance(exc, JournalIOError) or (is_empty(journal) and not wal_written(journal))
            )
        ):
            remove_journal_files(journal)
            remove_quietly(made)
        raise
    return store, made, ours


def backup_now(options: Options) -> Path:
    """Back the journal up now, as the options keep backups; return the backup's path.

    Raises :class:`~csvjournal.errors.CsvJournalError` when it cannot be taken."""
    with journal_errors(options.journal_path, options.csv_path, "back up the journal"):
        return take_backup(
            options.csv_path,
            options.journal_path,
            keep=options.keep_backups,
            busy_timeout=options.busy_timeout,
        )


def before_upgrade(options: Options, conn: Connection) -> None:
    """Run before an existing journal's schema is upgraded (``conn`` holds the write lock,
    on the old schema): refuse an open that would be refused anyway, for its arguments or,
    exporting, for a CSV edited by hand, so that it leaves the old schema as it was; else
    back the journal up, for good (the way back to the csvjournal that wrote it).

    Raises:
        SettingsError: an argument contradicts a stored setting.
        CsvChangedError: exporting, the CSV was edited by hand.
        CsvJournalError: the backup cannot be taken.
    """
    refuse_conflicts(conn, options)
    if options.export:
        refuse_hand_edits(driver(conn), options.csv_path)
    keep_for_good(backup_now(options), "taken before a schema upgrade")


def before_settings_change(options: Options, conn: Connection) -> None:
    """Run before an open changes the journal's settings (``conn`` holds the write lock:
    one of several opens asking for the change at once gets here): refuse an exporting
    open for a CSV edited by hand, which its export would refuse anyway, so that it
    changes nothing; else back the journal up as it is. The backup is best effort: a CSV
    in a folder this user may not write has no backups folder.

    Raises:
        CsvChangedError: exporting, the CSV was edited by hand.
    """
    if options.export:  # (exports are noted under the lock held: no race with an exporter)
        refuse_hand_edits(driver(conn), options.csv_path)
    if not options.keep_backups:
        return
    try:
        backup_now(options)
    except CsvJournalError as exc:
        log.warning("backup_before_settings_failed", path=str(options.csv_path), error=str(exc))
