"""Opening the journal of the CSV a command names, and the errors for one that is missing
or of an older schema."""

from __future__ import annotations

import os
import shlex
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import csvjournal
from csvjournal import _migrate
from csvjournal._handedits import refuse_hand_edits
from csvjournal._schema import peek
from csvjournal.backup import list_backups, newest_backup_hint
from csvjournal.cli._app import CliError

__all__ = [
    "existing_journal",
    "journal_path_of",
    "no_journal",
    "refuse_hand_edits_first",
    "schema_revision",
]


def journal_path_of(csv: Path) -> Path:
    """Where the journal of ``csv`` lives."""
    return Path(f"{csv}.journal")


def no_journal(csv: Path, hint: str = "") -> CliError:
    """The error for a CSV without a journal: run init, or restore a backup when it has
    some (its journal was lost); for a symlink to a CSV that has one, use the file it
    points at."""
    if csv.is_symlink():
        real = Path(os.path.realpath(csv))
        if journal_path_of(real).exists():
            return CliError(f"no journal for {csv}, a link to {real}, which has one: use {real}")
    shown = f"./{csv}" if str(csv).startswith("-") else str(csv)  # not read as an option
    init = f"run csvjournal init {shlex.quote(shown)} --key COLUMN"
    if list_backups(csv):  # its journal deleted or lost: the way back is a backup, if sound
        restore = newest_backup_hint(csv)
        if restore.startswith("restore"):
            return CliError(f"no journal for {csv}: {restore}, or {init}{hint}")
    if not csv.exists() and not csv.is_symlink():  # init would refuse it too
        return CliError(f"no journal for {csv}, and no such file (init imports an existing CSV)")
    return CliError(f"no journal for {csv}: {init}{hint}")


def schema_revision(journal: Path) -> str | None:
    """The schema revision of the journal file, read without writing a byte of it (None:
    no csvjournal schema in it)."""
    try:  # (and without leaving the -wal/-shm files it had to make)
        with peek(journal) as conn:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:  # unreadable: the open that follows says so, naming it
        return None
    return None if row is None else str(row[0])


def refuse_hand_edits_first(csv: Path) -> None:
    """For a command that refuses a CSV edited by hand only after its open (a
    non-exporting one, as ``recover`` and ``run`` make first): refuse it before, where that
    open would upgrade an older schema, so that the refusal leaves the schema as it was.

    Raises:
        CsvChangedError: the CSV was edited by hand since csvjournal last wrote it.
    """
    journal = journal_path_of(csv)
    if journal.exists() and schema_revision(journal) in _migrate.KNOWN_REVISIONS[:-1]:
        with peek(journal) as conn:
            refuse_hand_edits(conn, csv)


@contextmanager
def existing_journal(
    csv: Path, *, export: bool = False, keep_backups: int | None = None, reading: bool = False
) -> Iterator[csvjournal.Journal]:
    """Open the existing journal of ``csv`` (non-exporting unless asked; an exporting open
    takes the automatic backup unless ``keep_backups`` is 0). A command that only
    ``reading`` refuses a journal of an older schema: the open would upgrade it, and the
    older csvjournal still running the job would then refuse it.

    Raises:
        CliError: there is no journal beside ``csv``, or ``reading`` an older schema.
    """
    journal_path = journal_path_of(csv)
    if not journal_path.exists():
        raise no_journal(csv)
    revision = schema_revision(journal_path) if reading else None
    if revision in _migrate.KNOWN_REVISIONS[:-1]:
        upgrade = shlex.join(["csvjournal", "upgrade", str(csv)])
        raise CliError(
            f"{journal_path}: schema {revision}, older than this csvjournal's"
            f" ({_migrate.head_revision()}); reading it would upgrade it, and the csvjournal"
            f" that wrote it would then refuse it: run {upgrade} once no job uses that one"
        )
    keep = keep_backups if keep_backups is not None else 5 if export else 0
    with csvjournal.open(csv, export=export, keep_backups=keep) as journal:
        yield journal
