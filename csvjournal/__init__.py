"""csvjournal: keep a batch job's CSV status sheet correct, current and crash-safe.

Workers call :meth:`Journal.record`; each update is committed to a WAL-mode SQLite journal
beside the CSV. See :func:`open`.
"""

from __future__ import annotations

import importlib

from csvjournal import _posix  # noqa: F401 - a system without POSIX locks is refused at import

# (not typing's: importing typing takes 12 ms, in which a Ctrl-C would print a traceback;
# type checkers take any name TYPE_CHECKING for theirs)
TYPE_CHECKING = False

# Names load on first use (PEP 562), so that the console script's entry
# (csvjournal._entry) can take Ctrl-C before SQLAlchemy and the rest are imported.
if TYPE_CHECKING:
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

    __version__: str

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

_ERRORS = [name for name in __all__ if name.endswith("Error")]
_HOMES = {
    "open": "csvjournal._open",
    "restore": "csvjournal._restore",
    "Task": "csvjournal._work",
    **dict.fromkeys(_ERRORS, "csvjournal.errors"),
    "Event": "csvjournal.events",
    "Journal": "csvjournal.journal",
    "MergeReport": "csvjournal.merge",
    "merge_csv": "csvjournal.merge",
    "RecoveryReport": "csvjournal.recovery",
}


# Hidden from type checkers: a module __getattr__ would make any misspelt name type-check.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        if name == "__version__":
            value: object = _version()
        elif name in _HOMES:
            value = getattr(importlib.import_module(_HOMES[name]), name)
        else:
            value = _submodule(name)  # csvjournal.errors after a bare `import csvjournal`
        globals()[name] = value
        return value

    def _submodule(name: str) -> object:
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":  # one the module imports is missing
                raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("csvjournal")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"
