"""``csvjournal.open()``: from arguments to a :class:`~csvjournal.journal.Journal`."""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from csvjournal._csvbytes import check_encoding
from csvjournal._importer import unfinished
from csvjournal._options import Options
from csvjournal._settings import DEFAULT_STATUS, DEFAULT_TIMESTAMP
from csvjournal._writer import IN_PROGRESS, PENDING
from csvjournal.errors import JournalIOError, SettingsError
from csvjournal.journal import Journal
from csvjournal.store import Durability

__all__ = ["open"]


def _as_set(names: Iterable[str]) -> Iterable[str]:
    """``terminal=``'s statuses: one given as text is one status.

    Raises:
        SettingsError: text with a comma, the CLI's ``--terminal A,B``: meant as two.
        TypeError: not text nor an iterable of statuses (``terminal=5``).
    """
    if not isinstance(names, str):
        if not isinstance(names, Iterable):
            raise TypeError(
                f"terminal= must be a set of statuses, not {type(names).__name__} {names!r}"
            )
        return names
    if "," in names:
        statuses = ", ".join(repr(name.strip()) for name in names.split(","))
        raise SettingsError(
            f"terminal={names!r} is one status; give a set of them: terminal={{{statuses}}}"
        )
    return (names,)


def open(  # noqa: A001 - the spec's name, as in builtins.open
    csv_path: str | os.PathLike[str],
    *,
    key: str | None = None,
    journal_path: str | os.PathLike[str] | None = None,
    url: str | None = None,
    export: bool = True,
    durability: Durability = "full",
    terminal: Iterable[str] | None = None,
    status_column: str = DEFAULT_STATUS,
    timestamp_column: str = DEFAULT_TIMESTAMP,
    formula_guard: bool | None = None,
    encoding: str | None = None,
    busy_timeout: float = 30.0,
    allow_network_fs: bool = False,
    keep_backups: int = 5,
) -> Journal:
    """Open (or create) the journal of ``csv_path``.

    A new journal needs ``key``; an existing one keeps its stored settings (a
    ``key``/``status_column``/``timestamp_column`` given that differs from the stored one is
    an error, even one given as the default's text; ``terminal``, one or more statuses,
    replaces the stored set). ``durability="full"`` makes each commit survive
    power loss, ``"normal"`` a crash of the process. ``busy_timeout`` bounds how long a
    write waits for other writers. An existing CSV without a journal is imported
    (``encoding`` names its encoding when it is not UTF-8/UTF-16 with BOM). With
    ``export=True`` this handle volunteers as the one exporter that keeps the CSV current
    (``formula_guard=True`` neutralises cells a spreadsheet would run as formulas; the
    choice is stored in the journal, so every later exporter, in any process, keeps it
    until an open passes ``formula_guard`` again).
    When it becomes the exporter, the open starts a session: it backs the journal and CSV
    up into ``orders.csv.backups/`` (keeping the newest ``keep_backups``; 0 turns these
    automatic backups off, which is unsafe: a damaged journal then has nothing to be
    restored from), then recovers from any crash (see :meth:`Journal.recover`, with
    SQLite's full ``integrity_check``).

    Raises:
        TypeError: an argument of the wrong kind (a column name that is not text,
            ``keep_backups`` not an int, a flag not True or False); nothing is made.
        SettingsError: missing or conflicting arguments, or a file that is not a journal.
        SchemaTooNewError: the journal was written by a newer csvjournal (left unchanged).
        JournalBusyError: the journal stayed locked for longer than ``busy_timeout``.
        NetworkFilesystemError: the journal would be on a network file system.
        CsvFormatError: the CSV to import is not valid input (nothing is created).
        JournalIOError: the journal or the CSV to import could not be read or written.
        CsvChangedError: the CSV was edited by hand since the last export.
        JournalCorruptError: the journal fails SQLite's integrity check.
    """
    _check_types(
        key=key,
        status_column=status_column,
        timestamp_column=timestamp_column,
        keep_backups=keep_backups,
        busy_timeout=busy_timeout,
        flags={"export": export, "allow_network_fs": allow_network_fs},
        formula_guard=formula_guard,
    )
    if Path(csv_path).name in ("", ".", ".."):  # "" is the current folder, as "." is
        raise SettingsError(f"{os.fspath(csv_path)!r}: no CSV file named, but a folder")
    csv = _absolute(csv_path)
    path = _absolute(journal_path) if journal_path is not None else Path(f"{csv}.journal")
    if path == csv or (path.exists() and csv.exists() and path.samefile(csv)):
        # each would be written over the other: the export renamed over the database
        raise SettingsError(f"{path}: journal_path= names the CSV itself")
    if Path(f"{csv}.backups") in (path, path.parent):
        raise SettingsError(f"{path}: journal_path= is in the CSV's backups folder, csvjournal's")
    statuses = None if terminal is None else frozenset(_as_set(terminal))
    _check_texts(
        ("key", key),
        ("status_column", status_column),
        ("timestamp_column", timestamp_column),
        *(("a terminal status", name) for name in statuses or ()),
    )
    _check(
        csv,
        path,
        key=key,
        terminal=statuses,
        url=url,
        encoding=encoding,
        busy_timeout=busy_timeout,
        keep_backups=keep_backups,
    )
    options = Options(
        csv_path=csv,
        journal_path=path,
        key=key,
        export=export,
        durability=durability,
        terminal=statuses,
        status_column=status_column,
        timestamp_column=timestamp_column,
        busy_timeout=busy_timeout,
        encoding=encoding,
        formula_guard=formula_guard,
        allow_network_fs=allow_network_fs,
        keep_backups=keep_backups,
    )
    return Journal(options)


def _check_types(
    *,
    key: object,
    status_column: object,
    timestamp_column: object,
    keep_backups: object,
    busy_timeout: object,
    flags: dict[str, object],
    formula_guard: object,
) -> None:
    """Refuse arguments of the wrong kind before anything is made: stored in a new
    journal, one would make every later open fail.

    Raises:
        TypeError: which argument, and what it must be.
    """
    names = {"key": key, "status_column": status_column, "timestamp_column": timestamp_column}
    for name, value in names.items():
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name} must be a column name (text), not {value!r}")
    if type(keep_backups) is not int:
        raise TypeError(f"keep_backups must be an int, not {keep_backups!r}")
    if type(busy_timeout) not in (int, float):
        raise TypeError(f"busy_timeout must be a number of seconds, not {busy_timeout!r}")
    for name, value in {**flags, "formula_guard": formula_guard}.items():
        if type(value) is not bool and not (name == "formula_guard" and value is None):
            raise TypeError(f"{name} must be True or False, not {value!r}")


def _absolute(path: str | os.PathLike[str]) -> Path:
    """``path`` in its folder's real, absolute path: the exporter thread writes later,
    whatever the process's folder is by then, and a '..' after a symlinked folder means
    what the OS makes of it, not what the text says (as SQLAlchemy would read it). The
    name itself is kept: a symlinked CSV stays the link."""
    given = Path(path)
    return Path(os.path.realpath(given.absolute().parent)) / given.name


def _check(
    csv: Path,
    path: Path,
    *,
    key: str | None,
    terminal: frozenset[str] | None,
    url: str | None,
    encoding: str | None,
    busy_timeout: float,
    keep_backups: int,
) -> None:
    """Refuse arguments that cannot make a journal (see :func:`open`).

    Raises:
        SettingsError: which one, and why.
        JournalIOError: the CSV's path cannot be followed (see :func:`_check_csv_file`).
    """
    if terminal is not None and (
        not terminal or not all(isinstance(name, str) and name for name in terminal)
    ):
        # none would mean no row is ever done: every finished row offered again for good
        raise SettingsError(
            f"terminal= must name one or more statuses, not {sorted(terminal, key=repr)}"
        )
    if terminal is not None and (working := terminal & {PENDING, IN_PROGRESS}):
        # a row waiting or being worked on would count as done: never offered, never run
        raise SettingsError(
            f"the terminal statuses must not include {', '.join(sorted(working))}: those"
            " mean a row is not done yet"
        )
    if keep_backups < 0:
        raise SettingsError(f"keep_backups must be 0 or more, not {keep_backups}")
    if not busy_timeout >= 0 or math.isinf(busy_timeout):  # NaN fails the first test
        raise SettingsError(f"busy_timeout must be a number of seconds, not {busy_timeout}")
    if encoding is not None:
        check_encoding(encoding)
    _check_csv_file(csv)
    if path.is_dir():  # (SQLite says "disk I/O error")
        raise SettingsError(f"{path}: a folder, not a journal")
    _check_name_lengths(csv, path)
    _check_linked_journal(csv, path)
    folder = Path(f"{csv}.backups")
    if folder.exists() and not folder.is_dir():
        raise SettingsError(
            f"{folder}: must be a folder (the journal's backups and lock files live there)"
        )
    if url is not None:
        raise SettingsError("url= (a journal in a database server) is not supported yet")
    if key is None and not path.exists():
        raise SettingsError(f"{path}: no journal here yet, and key= is required to create one")
    if key is None and unfinished(path):
        raise SettingsError(
            f"{path}: the journal's creation is not finished: another process is making it"
            " right now (wait for it), or it was interrupted (create it again with key=,"
            " csvjournal init CSV --key COLUMN, which imports the CSV anew)"
        )


def _check_texts(*named: tuple[str, object]) -> None:
    """Refuse a name that is not text a file can hold: a lone surrogate, what an undecodable
    byte of a command line becomes (SQLite could not store it; no CSV could show it).

    Raises:
        SettingsError: which argument, and the character.
    """
    for what, value in named:
        if not isinstance(value, str):
            continue  # (the checks of each argument say what is wrong with it)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            bad = value[exc.start : exc.end]
            raise SettingsError(
                f"{what} {value!r} holds {bad!r}, which is no character: a byte that was not"
                " text in the encoding it was read with (a command line's, say)"
            ) from None


def _check_csv_file(csv: Path) -> None:
    """Refuse a CSV path that is there and no regular file (a dangling link is fine: the
    CSV will be made where it points).

    Raises:
        SettingsError: a folder, a FIFO or a device.
        JournalIOError: a path the OS cannot follow (a symlink loop, say).
    """
    try:
        found = csv.stat()
    except FileNotFoundError:
        return
    except OSError as exc:  # a symlink loop, a folder we may not enter
        raise JournalIOError(f"{csv}: cannot be read as a CSV file ({exc.strerror})") from exc
    if stat.S_ISDIR(found.st_mode):
        raise SettingsError(f"{csv}: a folder, not a CSV file")
    if not stat.S_ISREG(found.st_mode):  # reading a FIFO would wait for a writer for good
        raise SettingsError(f"{csv}: not a regular file (a FIFO or a device, say)")


def _check_linked_journal(csv: Path, path: Path) -> None:
    """Refuse to make a second journal of one CSV: a new one beside a symlink whose
    target already has its own (the two would each take the other's exports for hand
    edits). ``journal_path=`` given elsewhere is the caller's choice, and is not checked.

    Raises:
        SettingsError: which journal the CSV already has, and what to open instead.
    """
    if path != Path(f"{csv}.journal") or path.exists() or not csv.is_symlink():
        return
    real = Path(os.path.realpath(csv))
    theirs = Path(f"{real}.journal")
    if theirs.exists() and theirs != path:
        raise SettingsError(
            f"{csv} links to {real}, which has its own journal ({theirs}): open {real}"
            " instead (a second journal would take the first one's exports for hand edits)"
        )


# The longest names made beside them: ``.orders.csv.csvjournal-<pid>-<random>`` for the
# CSV's exports, ``.orders.csv.journal.restoring-<pid>-journal`` for the journal's restore.
_CSV_NAME_ADDS = len(".csvjournal-") + 1 + 8 + 1 + 8
_JOURNAL_NAME_ADDS = 1 + len(".restoring-") + 8 + len("-journal")


def _check_name_lengths(csv: Path, journal: Path) -> None:
    """Refuse names too long for the files csvjournal makes beside them: it would make
    the journal, then fail at its first export, for good.

    Raises:
        SettingsError: which name, and how long it may be.
    """
    checks = [(csv, _CSV_NAME_ADDS), (journal, _JOURNAL_NAME_ADDS)]
    if journal == Path(f"{csv}.journal"):  # one name to shorten: the CSV's
        checks = [(csv, max(_CSV_NAME_ADDS, len(".journal") + _JOURNAL_NAME_ADDS))]
    if csv.is_symlink():  # its exports are written beside the file it points at
        checks.append((Path(os.path.realpath(csv)), _CSV_NAME_ADDS))
    for path, adds in checks:
        try:
            name_max = os.pathconf(path.parent, "PC_NAME_MAX")
        except (OSError, ValueError):
            name_max = 255
        if len(os.fsencode(path.name)) + adds > name_max:
            raise SettingsError(
                f"{path}: the name is too long for the files csvjournal keeps beside it"
                f" (at most {name_max - adds} bytes here)"
            )
