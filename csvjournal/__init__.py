"""csvjournal: keep a batch job's CSV status sheet correct, current and crash-safe.

Workers call :meth:`Journal.record`; each update is committed to a WAL-mode SQLite journal
beside the CSV. See :func:`open`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from csvjournal._open import open  # noqa: A004 - the spec names it open
from csvjournal._restore import restore
from csvjournal._work import Task
from csvjournal.errors import (
    BackupNotFoundError,
    BatchOpenError,
    CommandError,
    CsvChangedError,
    CsvFormatError,
    CsvJournalError,
    ExportError,
    FlushTimeoutError,
    JournalBusyError,
    JournalClosedError,
    JournalCorruptError,
    JournalIOError,
    NetworkFilesystemError,
    RecordError,
    SchemaTooNewError,
    SettingsError,
)
from csvjournal.events import Event
from csvjournal.journal import Journal
from csvjournal.merge import MergeReport, merge_csv
from csvjournal.recovery import RecoveryReport

try:
    __version__ = version("csvjournal")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "BackupNotFoundError",
    "BatchOpenError",
    "CommandError",
    "CsvChangedError",
    "CsvFormatError",
    "CsvJournalError",
    "Event",
    "ExportError",
    "FlushTimeoutError",
    "Journal",
    "JournalBusyError",
    "JournalClosedError",
    "JournalCorruptError",
    "JournalIOError",
    "MergeReport",
    "NetworkFilesystemError",
    "RecordError",
    "RecoveryReport",
    "SchemaTooNewError",
    "SettingsError",
    "Task",
    "__version__",
    "merge_csv",
    "open",
    "restore",
]
