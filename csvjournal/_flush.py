"""Exports on request: :func:`flush_csv` (wait for the exporter, or export here when none
is alive), :func:`catch_up` (the same at close, never raising) and :func:`export_to` (the
CSV written to another path, now)."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import structlog
from sqlalchemy.exc import SQLAlchemyError

from csvjournal import _reads
from csvjournal._atomicfile import reason, remove_dead_temp_files
from csvjournal._export import export_failure, failure_text
from csvjournal._forking import ForkGate
from csvjournal._handedits import blocked_by
from csvjournal._oslock import exporter_pid
from csvjournal._pids import stopped
from csvjournal._rendercache import stream_csv
from csvjournal._settings import Settings, stored_guard
from csvjournal._values import seconds_arg
from csvjournal.backup import backups_folder
from csvjournal.csvio import atomic_write
from csvjournal.errors import (
    CsvChangedError,
    CsvJournalError,
    ExportError,
    FlushTimeoutError,
    SettingsError,
)
from csvjournal.exporter import POLL_SECONDS, Exporter
from csvjournal.store import Store

__all__ = [
    "RETRY_NOTE",
    "UNSEEN_EXPORTER_SECONDS",
    "catch_up",
    "check_copy_target",
    "export_to",
    "flush_csv",
]

log = structlog.get_logger(__name__)


# Said of an export that failed while the caller's handle exports (and retries).
RETRY_NOTE = " (the exporter tries again while its handle is open; every record is safe in it)"


def check_copy_target(path: Path, csv_path: Path, journal_path: Path) -> None:
    """Refuse ``path`` as the target of a copy of the CSV (see :func:`export_to`).

    Raises:
        SettingsError: one of the journal's own files (its CSV, the journal and its
            -wal/-shm, a backup), or the CSV of another journal: never overwritten by a copy.
        ExportError: there and no regular file (a FIFO, a device: not replaced), or a
            path the OS cannot follow (a folder we may not enter, a symlink loop).
    """
    try:
        target = path.resolve()
        regular = path.is_file() or not path.exists()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop, in Python 3.11
        raise ExportError(f"{path}: could not write the CSV: {exc}") from exc
    journal = journal_path.resolve()
    own = {csv_path.resolve(), journal}
    own |= {journal.with_name(journal.name + suffix) for suffix in ("-wal", "-shm", "-journal")}
    backups = backups_folder(csv_path).resolve()
    if target in own or target == backups or backups in target.parents:
        raise SettingsError(
            f"{path}: one of the journal's own files; an export to a path writes a copy"
            " elsewhere (without a path, the journal's own CSV is brought up to date)"
        )
    if not regular:
        raise ExportError(f"{path}: not a regular file; an export writes a CSV file")
    # the name as given ('..' applied: no symlink followed), or the file it leads to
    other = _another_jobs(Path(os.path.abspath(path))) or _another_jobs(target)
    if other is not None:
        raise SettingsError(
            f"{path}: {other}; an export to a path writes a copy where no job keeps its files"
        )


_SQLITE_HEADER = b"SQLite format 3\x00"
_WAL_MAGIC = (b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83")


def _another_jobs(path: Path) -> str | None:
    """What file of another job ``path`` is (its CSV, its journal or the journal's
    -wal/-shm, a file in its backups folder), or any SQLite database: overwritten by a copy
    of a sheet, the job's state would be lost, or its sheet taken for a hand edit."""
    if Path(f"{path}.journal").exists():
        return f"the CSV of another job (its journal is {path}.journal)"
    for folder in path.parents:
        if folder.name.endswith(".backups") and Path(f"{str(folder)[:-8]}.journal").exists():
            return f"in the backups folder of another job ({folder})"
    if path.name.endswith(("-wal", "-shm", "-journal")) and _is_database(
        Path(str(path).rsplit("-", 1)[0])
    ):
        return "a file of another job's journal"
    if _is_database(path):
        return "an SQLite database (a job's journal, or its backup)"
    return None


def _is_database(path: Path) -> bool:
    """Whether ``path`` is a regular file that begins as an SQLite database or its WAL."""
    try:
        if not path.is_file():  # (a FIFO would block the read)
            return False
        with path.open("rb") as file:
            head = file.read(len(_SQLITE_HEADER))
    except OSError:
        return False
    return head == _SQLITE_HEADER or head[:4] in _WAL_MAGIC


def export_to(store: Store, settings: Settings, path: Path) -> int:
    """Write the journal's CSV to another ``path`` now; return the sequence number it shows.

    Raises:
        OSError: the file could not be written.
    """
    # an export to it, or to another name there, that was killed
    for leftover in remove_dead_temp_files(path):
        log.info("temp_file_removed", path=str(leftover))
    with store.read() as conn:  # one snapshot, streamed to the file
        seq = _reads.last_seq(conn)
        guard = stored_guard(conn)  # as stored now: see follow_guard
        atomic_write(path, stream_csv(conn, settings.dialect, guard))
    return seq


# How long a wait that must not wait for a stopped exporter waits for one it cannot see
UNSEEN_EXPORTER_SECONDS = 60.0


def flush_csv(
    store: Store,
    settings: Settings,
    csv_path: Path,
    exporter: Exporter | None,
    *,
    formula_guard: bool,
    timeout: float | None,
    gate: ForkGate | None = None,
    not_for_stopped: bool = False,
    check_journal: Callable[[], None] | None = None,
) -> None:
    """Wait until the CSV shows every commit made so far, exporting here if nobody does
    (with ``not_for_stopped``: not while the exporting process is stopped, SIGSTOP or
    Ctrl-Z, which exports nothing until resumed: that times out at once).
    The handle's fork ``gate`` is held around each use of a connection, never while this
    waits: a fork meanwhile would wait for the wait, and the exporter for the fork.
    ``check_journal`` raises once the journal file is lost (deleted, replaced): called
    first and at each look, as no exporter will show what went into a lost file.

    Raises:
        FlushTimeoutError: ``timeout`` seconds passed first.
        ExportError: the CSV could not be written, here or by ``exporter`` while this
            waited (it tries again).
        CsvChangedError: the CSV was edited by hand (the exporter leaves it as it is).
        SettingsError: ``timeout`` is NaN (no deadline would ever come) or below 0.
        TypeError: ``timeout`` is not a number.
    """
    if timeout is not None and not seconds_arg("flush(timeout=)", timeout) >= 0:  # NaN is not
        raise SettingsError(f"flush(timeout=) must be 0 or more seconds, not {timeout}")
    operation = gate.operation if gate is not None else nullcontext
    check = check_journal or (lambda: None)
    check()
    with operation(), store.read() as conn:
        target = _reads.last_seq(conn)
        guard = stored_guard(conn)
        shown = _reads.exported_seq(conn)
        failed_before = export_failure(conn)  # another handle's exporter, failing already
    deadline = None if timeout is None else time.monotonic() + timeout
    if exporter is not None and exporter.leading:
        # The guard turned on or off by an open, or a merged hand edit that the CSV still
        # shows (its rows deleted, say): no new commit, and yet the CSV is behind.
        if exporter.formula_guard != guard or shown is None:
            exporter.export_again(None if deadline is None else deadline - time.monotonic())
        if _by_this_exporter(exporter, csv_path, target, deadline):
            return
    seen, since = shown, time.monotonic()  # what the CSV showed last, and since when
    while True:
        check()
        with operation(), store.read() as conn:
            exported = _reads.exported_seq(conn)  # None: never written from the journal
            blocked = blocked_by(conn, csv_path)
            failure = export_failure(conn)
        if exported != seen:
            seen, since = exported, time.monotonic()
        if blocked is not None:  # the exporter of another handle waits for the edit's fate
            raise CsvChangedError(blocked)
        if exported is not None and exported >= target and csv_path.exists():
            return
        try:
            with operation():
                exported = export_here(store, settings, csv_path, formula_guard)
        except (OSError, UnicodeError) as exc:  # the CSV's folder deleted, say
            raise ExportError(f"{csv_path}: could not write the CSV: {reason(exc)}") from exc
        if exported:
            continue
        if failure is not None and failure != failed_before:  # another handle exports, and
            raise ExportError(  # failed since the call: no use waiting for it
                f"{csv_path}: the CSV is behind the journal: {failure_text(failure)} (it"
                " tries again while its process runs; every record is safe in the journal)"
            )
        if deadline is not None or not_for_stopped:
            stalled = time.monotonic() - since
            _check_deadline(csv_path, deadline, timeout, not_for_stopped, stalled)
        time.sleep(POLL_SECONDS)


def _check_deadline(
    csv_path: Path,
    deadline: float | None,
    timeout: float | None,
    not_for_stopped: bool,
    stalled: float = 0.0,
) -> None:
    """Raise :class:`FlushTimeoutError` naming the exporter waited for (its process, and
    whether it is stopped: the usual reason an exporter falls behind) once ``deadline``
    passed, or at once for a stopped one with ``not_for_stopped``; with that, also for one
    this process cannot see (of another PID namespace) once the CSV has shown nothing new
    for ``stalled`` >= :data:`UNSEEN_EXPORTER_SECONDS` (it may be stopped)."""
    late = deadline is not None and time.monotonic() >= deadline
    if not late and not not_for_stopped:
        return
    pid = exporter_pid(csv_path)
    halted = pid is not None and stopped(pid)
    if not late and not halted:
        if pid is None and stalled >= UNSEEN_EXPORTER_SECONDS:
            raise FlushTimeoutError(
                f"{csv_path}: the CSV is behind the journal, and has shown nothing new for"
                f" {stalled:.0f} s; its exporter is a process this one cannot see (of another"
                " PID namespace, a container, say), perhaps stopped"
            )
        return
    said = f"did not catch up with the journal in {timeout} s" if late else "is behind the journal"
    if pid is None:
        raise FlushTimeoutError(f"{csv_path}: the CSV {said}")
    if halted:
        raise FlushTimeoutError(
            f"{csv_path}: the CSV {said}; its exporter, process {pid}, is stopped"
            f" (`kill -CONT {pid}` resumes it)"
        )
    raise FlushTimeoutError(f"{csv_path}: the CSV {said}; its exporter is process {pid}")


def export_here(store: Store, settings: Settings, csv_path: Path, formula_guard: bool) -> bool:
    """Write the CSV from this handle if no exporter holds the lock (taking it for the
    export: nobody else exports meanwhile); whether it did.

    Raises:
        OSError, UnicodeError: the export failed (the lock is given back).
        CsvChangedError: the CSV was edited by hand.
    """
    helper = Exporter(store, settings, csv_path, formula_guard)
    if not helper.try_lead():
        return False
    helper.release()
    return True


def _by_this_exporter(
    exporter: Exporter, csv_path: Path, target: int, deadline: float | None
) -> bool:
    """Wait for this handle's own exporter to show ``target``; False when it stopped
    leading first (the caller goes on as a handle without one).

    Raises:
        CsvChangedError: a hand edit stopped its exports.
        ExportError: its export failed meanwhile (it tries again).
    """
    exporter.wake()
    missed = exporter.missed
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    if exporter.wait_for(target, timeout, lambda: exporter.leading):
        if exporter.blocked is not None:  # the CSV on disk is a hand edit, not merged
            raise CsvChangedError(str(exporter.blocked))
        if csv_path.exists():
            return True
        # deleted: written anew (the thread would notice, in a while)
        if exporter.export_again(None if deadline is None else deadline - time.monotonic()):
            return True
    if exporter.blocked is not None:
        raise CsvChangedError(str(exporter.blocked))
    if exporter.missed != missed:  # it retries; the caller hears now, not never
        raise ExportError(
            f"{csv_path}: could not write the CSV: {reason(exporter.last_failure)}{RETRY_NOTE}"
        )
    return False


def catch_up(
    store: Store, settings: Settings, csv_path: Path, *, formula_guard: bool, timeout: float
) -> None:
    """At the close of an exporting handle: wait until the CSV shows every commit. A
    handle standing by leaves it to another handle's exporter, or exports itself if that
    one is gone (its records would otherwise wait for the next exporting open). Best
    effort, logged when it fails: the records are safe in the journal whatever happens to
    the CSV."""
    try:
        flush_csv(
            store,
            settings,
            csv_path,
            None,
            formula_guard=formula_guard,
            timeout=timeout,
            not_for_stopped=True,  # the close would only wait out its timeout
        )
    # FlushTimeoutError, ExportError, CsvChangedError; the journal's disk, full or gone
    except (CsvJournalError, SQLAlchemyError, sqlite3.Error) as exc:
        log.warning("csv_behind_at_close", path=str(csv_path), error=str(exc))
