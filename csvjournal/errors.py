"""The exception hierarchy of csvjournal.

Every error the package raises derives from :class:`CsvJournalError` and also from the
nearest builtin exception, so ``except ValueError`` keeps working for callers that do not
know csvjournal. This module imports nothing of the package.
"""

from __future__ import annotations

__all__ = [
    "BackupNotFoundError",
    "CommandError",
    "CsvChangedError",
    "CsvFormatError",
    "CsvJournalError",
    "ExportError",
    "FlushTimeoutError",
    "JournalBusyError",
    "JournalClosedError",
    "JournalCorruptError",
    "JournalIOError",
    "NetworkFilesystemError",
    "RecordError",
    "SchemaTooNewError",
    "SettingsError",
]


class CsvJournalError(Exception):
    """Base class of every error raised by csvjournal."""


class CsvFormatError(CsvJournalError, ValueError):
    """The CSV is not valid input; the message names the file, line and column."""


class CsvChangedError(CsvJournalError, ValueError):
    """The CSV was edited by hand since the last export."""


class SettingsError(CsvJournalError, ValueError):
    """Arguments to :func:`csvjournal.open` conflict with each other or with the journal, or
    an argument is out of its range (``claim(n=0)``, a lease that is not positive, a success
    status that is not terminal)."""


class RecordError(CsvJournalError, ValueError):
    """A ``record()`` call names an invalid key or field (empty, or contradicting the row)."""


class SchemaTooNewError(CsvJournalError, RuntimeError):
    """The journal was written by a newer csvjournal; it is refused before any write."""


class NetworkFilesystemError(CsvJournalError, OSError):
    """The journal lies on a network file system, where SQLite's WAL mode is unsafe."""


class JournalBusyError(CsvJournalError, TimeoutError):
    """The journal stayed locked by other writers for longer than the busy timeout."""


class ExportError(CsvJournalError, OSError):
    """The CSV could not be written."""


class JournalClosedError(CsvJournalError, RuntimeError):
    """The journal handle was used after ``close()``."""


class BatchOpenError(CsvJournalError, RuntimeError):
    """A call that waits for the exporter (``flush()``, ``recover()``, ``close()``) came
    from inside an open ``batch()`` block of the same thread, whose write lock it would wait
    for."""


class FlushTimeoutError(CsvJournalError, TimeoutError):
    """``flush(timeout)`` ran out before the CSV showed every earlier commit."""


class JournalCorruptError(CsvJournalError, RuntimeError):
    """The journal (or a backup) failed SQLite's integrity check; the message names the
    newest backup to restore."""


class JournalIOError(CsvJournalError, OSError):
    """A file of the journal could not be read or written: SQLite's journal file (the disk
    is full, an I/O error, a read-only file), a backup, the CSV to import or merge (missing,
    a folder, unreadable). The message names the file. The call that met it committed
    nothing; the journal is whole, and the next call succeeds once the cause is gone."""


class BackupNotFoundError(CsvJournalError, FileNotFoundError):
    """The folder given as a backup is not a backup of this journal."""


class CommandError(CsvJournalError, ValueError):
    """The command given to ``csvjournal run`` is invalid (e.g. an unknown placeholder)."""
