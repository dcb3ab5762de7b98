"""SQLite's run-time errors reach the caller as csvjournal's: a full disk is a
JournalIOError naming the journal, the call that met it commits nothing, and the journal
goes on once there is room again. The disk fills for real: the process's file size limit
(RLIMIT_FSIZE) makes every write past it fail, as a full disk does."""

from __future__ import annotations

import contextlib
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from structlog.testing import capture_logs

import csvjournal
from csvjournal._dberrors import translate
from csvjournal.errors import BackupNotFoundError, CsvJournalError, JournalIOError

BIG = "y" * 5000  # a record that fills the journal quickly


@contextmanager
def disk_full_after(extra_bytes: int, *files: Path) -> Iterator[None]:
    """Let no file of this process grow past the largest of ``files`` plus
    ``extra_bytes`` (the write fails with EFBIG, which SQLite reports as an I/O error)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    sizes = [path.stat().st_size for path in files if path.exists()]
    limit = max(sizes, default=0) + extra_bytes
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills us
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def _wal(journal: csvjournal.Journal) -> Path:
    return Path(f"{journal.journal_path}-wal")


@pytest.fixture
def quiet_journal(csv_path: Path) -> Iterator[csvjournal.Journal]:
    """A journal with no exporter and no automatic backups (only the journal grows)."""
    with csvjournal.open(csv_path, key="K", export=False, keep_backups=0) as journal:
        journal.record("first", x="1")
        yield journal


def _integrity(journal: csvjournal.Journal) -> str:
    conn = sqlite3.connect(journal.journal_path)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def test_record_on_a_full_disk_raises_journal_io_error_and_loses_nothing(
    quiet_journal: csvjournal.Journal,
) -> None:
    returned = []
    with disk_full_after(200_000, _wal(quiet_journal)), pytest.raises(JournalIOError) as raised:
        for i in range(1000):
            quiet_journal.record(f"k{i}", "DONE", note=BIG)
            returned.append(f"k{i}")
    assert isinstance(raised.value, CsvJournalError)
    assert isinstance(raised.value, OSError)
    assert str(quiet_journal.journal_path) in str(raised.value)
    assert 0 < len(returned) < 1000
    failed = f"k{len(returned)}"
    assert quiet_journal.get(failed) is None  # the call that raised committed nothing
    for key in returned:  # every call that returned is committed
        row = quiet_journal.get(key)
        assert row is not None
        assert (row["STATUS"], row["note"]) == ("DONE", BIG)
    quiet_journal.record(failed, "DONE")  # room again: the journal goes on
    assert quiet_journal.counts()["DONE"] == len(returned) + 1
    assert _integrity(quiet_journal) == "ok"


def test_a_batch_on_a_full_disk_commits_nothing(quiet_journal: csvjournal.Journal) -> None:
    before = [event.seq for event in quiet_journal.history("first")]
    full = disk_full_after(200_000, _wal(quiet_journal))
    with full, pytest.raises(JournalIOError), quiet_journal.batch():
        for i in range(20_000):
            quiet_journal.record(f"k{i}", "DONE", note=BIG)
    assert len(quiet_journal) == 1
    assert [event.seq for event in quiet_journal.history("first")] == before
    with quiet_journal.batch():  # room again
        quiet_journal.record("k0", "DONE")
    assert len(quiet_journal) == 2
    assert _integrity(quiet_journal) == "ok"


def test_threads_on_a_full_disk_either_commit_or_raise_journal_io_error(
    quiet_journal: csvjournal.Journal,
) -> None:
    committed: list[str] = []
    errors: list[BaseException] = []

    def work(thread: int) -> None:
        for i in range(200):
            key = f"t{thread}-{i}"
            try:
                quiet_journal.record(key, "DONE", note=BIG)
            except BaseException as exc:
                errors.append(exc)
            else:
                committed.append(key)

    with disk_full_after(300_000, _wal(quiet_journal)):
        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors, "the disk never filled"
    assert all(type(error) is JournalIOError for error in errors), {type(e) for e in errors}
    assert len(committed) + len(errors) == 1600
    assert all(quiet_journal.get(key) is not None for key in committed)
    assert len(quiet_journal) == len(committed) + 1
    assert _integrity(quiet_journal) == "ok"


def _no_file_size_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))


def test_a_full_disk_fails_the_exporters_exports_not_the_exporter(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="K", keep_backups=0) as journal:
        journal.record("a", "DONE")
        journal.flush(timeout=10)
        with capture_logs() as logs:
            # Room for the CSV, not for a page of the journal: another process, with room,
            # records; our exporter writes the CSV, then cannot note that in the journal.
            with disk_full_after(1000):
                subprocess.run(
                    [sys.executable, "-c", _RECORD_B, str(csv_path)],
                    preexec_fn=_no_file_size_limit,
                    check=True,
                    timeout=120,
                )
                # at once, not at the timeout: the export failed, or flush's own read did
                with pytest.raises((csvjournal.ExportError, JournalIOError)):
                    journal.flush(timeout=30)
            journal.record("c", "DONE")
            journal.flush(timeout=30)  # by the same exporter thread, still alive
        events = [entry["event"] for entry in logs]
        assert "csv_export_failed" in events
        assert "csv_export_recovered" in events
    assert [line.split(",")[:2] for line in csv_path.read_text().splitlines()] == [
        ["K", "STATUS"],
        ["a", "DONE"],
        ["b", "DONE"],
        ["c", "DONE"],
    ]


_RECORD_B = """
import sys, csvjournal
with csvjournal.open(sys.argv[1], export=False) as journal:
    journal.record("b", "DONE")
"""


def test_a_users_own_sqlite_error_inside_a_batch_passes_unchanged(
    quiet_journal: csvjournal.Journal, tmp_path: Path
) -> None:
    other = sqlite3.connect(tmp_path / "theirs.db")
    with pytest.raises(sqlite3.OperationalError, match="no such table"), quiet_journal.batch():
        quiet_journal.record("mine", "DONE")
        other.execute("SELECT * FROM missing")
    other.close()
    assert quiet_journal.get("mine") is None


def test_backup_on_a_full_disk_raises_journal_io_error_and_leaves_no_half_backup(
    quiet_journal: csvjournal.Journal,
) -> None:
    for i in range(40):
        quiet_journal.record(f"k{i}", note=BIG)
    folder = Path(f"{quiet_journal.csv_path}.backups")
    with disk_full_after(10_000), pytest.raises(JournalIOError, match="back up the journal"):
        quiet_journal.backup()
    assert quiet_journal.backups() == []
    assert not any(path.name.startswith(".partial-") for path in folder.iterdir())
    assert quiet_journal.backup().is_dir()  # room again


def test_restore_of_a_folder_that_is_no_backup_raises_backup_not_found(
    quiet_journal: csvjournal.Journal, tmp_path: Path
) -> None:
    quiet_journal.close()
    empty = tmp_path / "not-a-backup"
    empty.mkdir()
    with pytest.raises(BackupNotFoundError) as raised:
        csvjournal.restore(quiet_journal.csv_path, empty)
    assert isinstance(raised.value, FileNotFoundError)
    assert str(empty) in str(raised.value)
    with pytest.raises(BackupNotFoundError, match="no such folder"):
        csvjournal.restore(quiet_journal.csv_path, tmp_path / "nowhere")


def test_opening_a_new_journal_on_a_full_disk_is_journal_io_error(tmp_path: Path) -> None:
    csv = tmp_path / "new.csv"
    with disk_full_after(0), pytest.raises(JournalIOError):
        csvjournal.open(csv, key="K", export=False)
    assert sorted(path.name for path in tmp_path.iterdir()) == []  # nothing left behind


def test_only_sqlites_run_time_errors_are_translated(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "db")
    conn.execute("CREATE TABLE t (a UNIQUE)")
    conn.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.IntegrityError) as raised:
        conn.execute("INSERT INTO t VALUES (1)")
    conn.close()
    bug = raised.value
    assert translate(bug, tmp_path / "db", tmp_path / "x.csv") is bug  # a bug stays one


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_journal_deleted_or_replaced_under_a_handle_fails_its_writes(
    quiet_journal: csvjournal.Journal, how: str
) -> None:
    path = quiet_journal.journal_path
    if how == "deleted":
        path.unlink()
    else:  # a copy put in its place, as a backup copied over it would be
        copy = path.with_name("copy")
        copy.write_bytes(path.read_bytes())
        copy.replace(path)
    time.sleep(0.1)  # commits look at the file every 50 ms (a stat costs a record 4%)
    with pytest.raises(JournalIOError, match="deleted or replaced"):
        quiet_journal.record("after", "DONE")
    with pytest.raises(JournalIOError, match="deleted or replaced"), quiet_journal.batch():
        quiet_journal.record("after-batch", "DONE")


@pytest.mark.parametrize("export", [True, False], ids=["exporting", "non-exporting"])
@pytest.mark.parametrize("flushed", [True, False], ids=["flushed", "just-opened"])
def test_every_write_after_the_journal_was_deleted_fails_and_no_new_file_is_made(
    tmp_path: Path, export: bool, flushed: bool
) -> None:
    # Commits after the first failure, within 50 ms of it, returned their sequence numbers
    # (into a file no one reads); a connection made meanwhile made a new, empty journal
    # there, and a record met "no such table" (a bare sqlite3 error), then a busy error.
    csv = tmp_path / "d.csv"
    journal = csvjournal.open(csv, key="ID", export=export, busy_timeout=3)
    journal.record("a")
    if flushed:
        journal.flush(timeout=10)
    journal.journal_path.unlink()
    time.sleep(0.2)
    for key in "bcde":
        with pytest.raises(JournalIOError, match="deleted or replaced"):
            journal.record(key)
    with contextlib.suppress(JournalIOError):
        journal.close()
    assert not journal.journal_path.exists()


@pytest.mark.parametrize("which", ["exporting", "standing by"])
def test_a_flush_after_the_journal_was_deleted_fails_and_never_waits(
    tmp_path: Path, which: str
) -> None:
    # The second exporting handle of a process stands behind the first; after the journal
    # was deleted, its flush() without a timeout waited for good for an export that no
    # exporter will ever make of a lost file.
    csv = tmp_path / "d.csv"
    first = csvjournal.open(csv, key="ID")
    second = csvjournal.open(csv)
    try:
        second.record("a")
        journal = first if which == "exporting" else second
        journal.journal_path.unlink()
        raised: list[BaseException] = []

        def flush() -> None:
            try:
                journal.flush()
            except BaseException as exc:
                raised.append(exc)

        waiter = threading.Thread(target=flush, daemon=True)
        waiter.start()
        waiter.join(timeout=30)
        assert not waiter.is_alive(), "flush() still waits"
        assert len(raised) == 1
        assert isinstance(raised[0], JournalIOError)
        assert "deleted or replaced" in str(raised[0])
    finally:
        for handle in (second, first):
            with contextlib.suppress(JournalIOError):
                handle.close()
    assert not csv.with_name("d.csv.journal").exists()


@pytest.mark.parametrize(
    ("denied", "says"),
    [
        ("folder", "its folder {folder} is read-only to this process"),
        ("journal", "the journal file {journal} is read-only to this process"),
    ],
)
def test_a_read_only_journal_says_which_file_or_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, denied: str, says: str
) -> None:
    # SQLite says only "attempt to write a readonly database", also for a read-only
    # folder when it must make the -wal/-shm files just to read.
    journal = tmp_path / "orders.csv.journal"
    journal.touch()
    paths = {"folder": tmp_path, "journal": journal}
    monkeypatch.setattr(
        "csvjournal._dberrors.os.access", lambda path, mode: Path(path) != paths[denied]
    )
    error = sqlite3.OperationalError("attempt to write a readonly database")
    error.sqlite_errorcode = 8  # type: ignore[attr-defined]  # SQLITE_READONLY
    translated = translate(error, journal, tmp_path / "orders.csv")
    assert isinstance(translated, JournalIOError)
    assert says.format(folder=tmp_path, journal=journal) in str(translated)
