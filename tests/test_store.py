"""Connection settings, write locking and busy handling on real SQLite files."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest

import csvjournal
from csvjournal.store import Store, is_busy


@pytest.mark.parametrize(("durability", "synchronous"), [("full", 2), ("normal", 1)])
def test_every_connection_is_wal_with_busy_timeout_and_synchronous(
    csv_path: Path, durability: str, synchronous: int
) -> None:
    with csvjournal.open(csv_path, key="ID", durability=durability) as journal:  # type: ignore[arg-type]
        journal.record("a")
        store: Store = journal._store
        pooled = store.engine.raw_connection()
        for conn in (store.writer(), pooled.driver_connection):
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert pooled.driver_connection.execute("PRAGMA busy_timeout").fetchone()[0] > 0
        # The group-commit writer waits in the writers' queue, never in SQLite's sleeps.
        assert store.writer().execute("PRAGMA busy_timeout").fetchone()[0] == 0
        assert pooled.driver_connection.execute("PRAGMA synchronous").fetchone()[0] == synchronous
        # The group-commit writer commits with NORMAL and then fsyncs the WAL itself.
        assert store.writer().execute("PRAGMA synchronous").fetchone()[0] == 1
        pooled.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
@pytest.mark.parametrize(("durability", "synced"), [("full", True), ("normal", False)])
def test_a_full_record_returns_only_after_the_wal_is_fsynced(
    csv_path: Path, durability: str, synced: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from csvjournal import store

    synced_files: list[str] = []
    real_sync = store._sync_data  # fdatasync, as SQLite's own (fsync where there is none)

    def spying_sync(fd: int) -> None:
        real_sync(fd)
        synced_files.append(os.readlink(f"/proc/self/fd/{fd}"))

    with csvjournal.open(csv_path, key="ID", durability=durability) as journal:  # type: ignore[arg-type]
        journal.record("warm-up")
        monkeypatch.setattr(store, "_sync_data", spying_sync)
        for i in range(3):
            journal.record(f"k{i}", "COMPLETED")
            assert (f"{journal.journal_path}-wal" in synced_files) is synced
            synced_files.clear()


def test_unknown_durability_is_refused(csv_path: Path) -> None:
    with pytest.raises(csvjournal.SettingsError, match="durability"):
        csvjournal.open(csv_path, key="ID", durability="fast")  # type: ignore[arg-type]


def _hold_write_lock(path: Path, seconds: float, ready: threading.Event) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    ready.set()
    time.sleep(seconds)
    conn.execute("COMMIT")
    conn.close()


def test_a_writer_waits_for_the_lock_and_then_commits(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID", busy_timeout=10) as journal:
        ready = threading.Event()
        holder = threading.Thread(target=_hold_write_lock, args=(journal.journal_path, 0.6, ready))
        holder.start()
        ready.wait()
        started = time.monotonic()
        journal.record("a", "COMPLETED")
        waited = time.monotonic() - started
        holder.join()
        assert waited >= 0.4  # it really waited for the other writer
        assert journal.get("a")["STATUS"] == "COMPLETED"  # type: ignore[index]


def test_a_writer_gives_up_with_journal_busy_error(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID", busy_timeout=0.5) as journal:
        journal.record("before")
        ready = threading.Event()
        holder = threading.Thread(target=_hold_write_lock, args=(journal.journal_path, 2.5, ready))
        holder.start()
        ready.wait()
        with pytest.raises(csvjournal.JournalBusyError, match="locked") as caught:
            journal.record("a", "COMPLETED")
        with pytest.raises(csvjournal.JournalBusyError), journal.batch():
            journal.record("b")
        holder.join()
        assert isinstance(caught.value, TimeoutError)
        assert isinstance(caught.value, csvjournal.CsvJournalError)
        assert journal.get("a") is None
        assert journal.get("b") is None
        journal.record("after")  # the handle works again once the lock is free
        assert len(journal) == 2


def _record_within(journal: csvjournal.Journal, key: str, seconds: float) -> bool:
    """Whether ``record(key)`` returns within ``seconds`` (it goes on in a thread if not)."""
    worker = threading.Thread(target=journal.record, args=(key,))
    worker.start()
    worker.join(seconds)
    return not worker.is_alive()


def test_a_lone_writer_skips_the_queue_and_queues_after_meeting_another(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID", busy_timeout=10, export=False) as journal:
        journal.record("first")
        queue_file = journal._store._queue.path  # type: ignore[union-attr]
        # Another open file holding the queue's flock: a writer that queues must wait.
        other = os.open(queue_file, os.O_RDWR)
        try:
            fcntl.flock(other, fcntl.LOCK_EX)
            assert _record_within(journal, "alone", 5)  # met nobody: tried SQLite at once
            fcntl.flock(other, fcntl.LOCK_UN)

            ready = threading.Event()
            holder = threading.Thread(
                target=_hold_write_lock, args=(journal.journal_path, 0.3, ready)
            )
            holder.start()
            ready.wait()
            journal.record("met-another")  # found SQLite locked: waited in the queue
            holder.join()

            fcntl.flock(other, fcntl.LOCK_EX)
            assert not _record_within(journal, "queued", 0.3)  # queues now
            fcntl.flock(other, fcntl.LOCK_UN)
            time.sleep(0.2)
            assert journal.get("queued") is not None  # and went on when its turn came

            time.sleep(1.2)  # no other writer met for a while: back to trying at once
            fcntl.flock(other, fcntl.LOCK_EX)
            assert _record_within(journal, "alone-again", 5)
            fcntl.flock(other, fcntl.LOCK_UN)
        finally:
            os.close(other)
        assert len(journal) == 5


def test_is_busy_recognises_sqlite_busy_and_locked_only() -> None:
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = 5  # type: ignore[attr-defined]
    snapshot = sqlite3.OperationalError("database is locked")
    snapshot.sqlite_errorcode = 517  # type: ignore[attr-defined]
    other = sqlite3.OperationalError("disk I/O error")
    other.sqlite_errorcode = 10  # type: ignore[attr-defined]
    assert is_busy(busy)
    assert is_busy(snapshot)
    assert not is_busy(other)
    assert not is_busy(ValueError("locked"))


def test_real_busy_error_from_sqlite_is_recognised(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    first = sqlite3.connect(path, isolation_level=None, timeout=0)
    second = sqlite3.connect(path, isolation_level=None, timeout=0)
    first.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError) as caught:
        second.execute("BEGIN IMMEDIATE")
    assert is_busy(caught.value)
    first.execute("ROLLBACK")


def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(csv_path: Path) -> None:
    journal_path = Path(f"{csv_path}.journal")
    journal_path.write_bytes(b"not a database " * 100)
    with pytest.raises(csvjournal.SettingsError, match="not a csvjournal journal"):
        csvjournal.open(csv_path)
    assert journal_path.read_bytes() == b"not a database " * 100


def test_another_sqlite_database_is_refused_and_left_alone(csv_path: Path) -> None:
    journal_path = Path(f"{csv_path}.journal")
    conn = sqlite3.connect(journal_path)
    conn.execute("CREATE TABLE mine (x)")
    conn.commit()
    conn.close()
    before = journal_path.read_bytes()
    with pytest.raises(csvjournal.SettingsError, match="not a csvjournal journal"):
        csvjournal.open(csv_path, key="ID")
    assert journal_path.read_bytes() == before


def test_the_change_token_moves_with_every_commit_of_any_connection(csv_path: Path) -> None:
    # The exporter reads the newest event only when this token moved since its last poll.
    with csvjournal.open(csv_path, key="ID", export=False) as journal:
        store: Store = journal._store
        quiet = store.data_version()
        assert store.data_version() == quiet
        journal.record("a")  # this handle's own writer connection
        after_record = store.data_version()
        assert after_record != quiet
        with sqlite3.connect(f"{csv_path}.journal") as other:  # any other connection
            other.execute("INSERT INTO settings (name, value) VALUES ('marker', '1')")
        after_other = store.data_version()
        assert after_other != after_record
        store.close()  # as before a fork: a new connection counts anew
        assert store.data_version() != after_other


def test_the_wal_is_cut_back_after_a_burst(tmp_path: Path) -> None:
    # Left alone, a WAL keeps the size of its largest transaction (an import, a new
    # column on a million rows) until the last connection closes.
    csv_path = tmp_path / "orders.csv"
    wal = Path(f"{csv_path}.journal-wal")
    with csvjournal.open(csv_path, key="ID", export=False, keep_backups=0) as journal:
        with journal.batch():
            for i in range(80_000):
                journal.record(f"k{i}", NOTE="x" * 300)
        burst = wal.stat().st_size
        assert burst > 48 * 2**20
        for i in range(2000):  # the WAL starts over once checkpointed
            journal.record(f"k{i}", "DONE")
        assert wal.stat().st_size <= 33 * 2**20


def test_a_wal_gone_under_a_commit_fails_it_with_journal_io_error(csv_path: Path) -> None:
    # A restore replaced the journal between two commits of a worker: its sync met no -wal
    # file, and record() raised a bare FileNotFoundError.
    with csvjournal.open(csv_path, key="ID", export=False) as journal:
        journal.record("a")
        store = journal._store
        with store._writer_lock:  # the next commit looks the -wal up again by its name
            assert store._wal_fd is not None
            os.close(store._wal_fd)
            store._wal_fd = None
        os.unlink(f"{journal.journal_path}-wal")
        with pytest.raises(csvjournal.JournalIOError, match="-wal file is gone"):
            journal.record("b")
