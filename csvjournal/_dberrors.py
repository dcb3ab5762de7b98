"""SQLite's run-time errors as csvjournal's: every error the package raises is a
:class:`~csvjournal.errors.CsvJournalError`.

SQLite reports a full disk, an I/O error, a locked or a damaged file as a bare
``sqlite3.OperationalError`` or ``DatabaseError`` (wrapped in SQLAlchemy's ``DBAPIError``
when it came through the engine), naming no file. The public calls pass them through
:func:`translate`; errors that mean a bug in csvjournal (a ``ProgrammingError``, a
constraint) are left as they are.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.exc import DBAPIError

from csvjournal._fsinfo import companion
from csvjournal.backup import newest_backup_hint
from csvjournal.errors import (
    CsvJournalError,
    JournalBusyError,
    JournalCorruptError,
    JournalIOError,
)

__all__ = ["DB_ERRORS", "io_error", "is_damaged", "journal_errors", "read_only_error", "translate"]

DB_ERRORS = (sqlite3.DatabaseError, DBAPIError)

# SQLite's primary result codes
_BUSY = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED
_DAMAGED = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
# SQLITE_PERM, SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN
_IO = {3, 8, 10, 13, 14}


def translate(
    exc: BaseException, journal: Path, csv_path: Path, doing: str | None = None
) -> BaseException:
    """The csvjournal error standing for SQLite's ``exc`` met on ``journal`` (whose CSV is
    ``csv_path``) while ``doing`` something other than reading or writing the journal, or
    ``exc`` itself when it is not one SQLite raises at run time."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    code = getattr(orig, "sqlite_errorcode", None)
    if not isinstance(orig, sqlite3.DatabaseError) or code is None:
        return exc
    if code & 0xFF in _BUSY:
        return JournalBusyError(f"{journal}: journal locked by another writer ({orig})")
    if code & 0xFF in _DAMAGED:
        return JournalCorruptError(
            f"{journal}: SQLite cannot read the journal ({orig});"
            f" {newest_backup_hint(csv_path, journal)}"
        )
    if code & 0xFF in _IO:
        return _io_error(orig, journal, csv_path, doing)
    return exc


def is_damaged(exc: BaseException) -> bool:
    """Whether SQLite's ``exc`` says the file is a damaged database (``SQLITE_CORRUPT``;
    a file that is no database at all is ``SQLITE_NOTADB``)."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    code = getattr(orig, "sqlite_errorcode", None)
    return isinstance(orig, sqlite3.DatabaseError) and code is not None and code & 0xFF == 11


def io_error(exc: BaseException, journal: Path) -> JournalIOError | None:
    """:class:`JournalIOError` when SQLite's ``exc`` says the disk is full, an I/O error or
    a read-only file; else ``None``."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    code = getattr(orig, "sqlite_errorcode", None)
    if not isinstance(orig, sqlite3.DatabaseError) or code is None or code & 0xFF not in _IO:
        return None
    return _io_error(orig, journal, journal, None)


def _io_error(
    orig: BaseException, journal: Path, csv_path: Path, doing: str | None
) -> JournalIOError:
    hint = _read_only_hint(journal) if "readonly" in str(orig) else ""
    if doing is not None:
        return JournalIOError(f"{csv_path}: could not {doing} ({orig}){hint}")
    return JournalIOError(f"{journal}: SQLite could not read or write the journal ({orig}){hint}")


def read_only_error(journal: Path) -> JournalIOError | None:
    """The error a write to ``journal`` would meet because this process may not write it
    (or its -wal/-shm files, or its folder), found before writing; None if it may."""
    for path, what in (
        (journal, "the journal file"),
        (companion(journal, "-wal"), "its -wal file"),
        (companion(journal, "-shm"), "its -shm file"),
    ):
        if path.exists() and not os.access(path, os.W_OK):
            return JournalIOError(f"{journal}: {what} {path} is read-only to this process")
    return None


def _read_only_hint(journal: Path) -> str:
    """What SQLite's "attempt to write a readonly database" means here: which file or
    folder this process may not write."""
    folder = journal.parent
    for path, what in (
        (journal, "the journal file"),
        (companion(journal, "-wal"), "its -wal file"),
        (companion(journal, "-shm"), "its -shm file"),
    ):
        if path.exists() and not os.access(path, os.W_OK):
            return f": {what} {path} is read-only to this process"
    if not os.access(folder, os.W_OK):
        return (
            f": its folder {folder} is read-only to this process (even reading needs to"
            " make the -wal and -shm files beside the journal)"
        )
    return ""


@contextmanager
def journal_errors(journal: Path, csv_path: Path, doing: str | None = None) -> Iterator[None]:
    """Raise SQLite's errors met inside the block as csvjournal's (see :func:`translate`);
    with ``doing`` (a backup, a restore), an ``OSError`` too, as a :class:`JournalIOError`
    saying what it was doing.

    Raises:
        JournalBusyError: the journal was locked.
        JournalCorruptError: SQLite found the journal's file damaged (the message names the
            newest sound backup to restore).
        JournalIOError: the disk is full, an I/O error, a read-only file.
    """
    try:
        yield
    except CsvJournalError:
        raise
    except DB_ERRORS as exc:
        error = translate(exc, journal, csv_path, doing)
        if error is exc:
            raise
        raise error from exc
    except OSError as exc:
        if doing is None:
            raise
        raise JournalIOError(f"{csv_path}: could not {doing} ({exc})") from exc
