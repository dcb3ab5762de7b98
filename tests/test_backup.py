"""Backups: one per exporting open, retention, backups killed half-way or taken by several
processes at once, and consistent copies taken while worker processes record.

Child processes are real Python processes running scripts written into ``tmp_path``; they
log to stderr (structlog prints to stdout by default) and report on files of their own.
Restoring a backup is tested in test_backup_restore.py.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import threading
import time
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest
from _backup import NAME
from _backup import dump as _dump
from _backup import finish as _finish
from _backup import folder_listing as _folder_listing
from _backup import journal_in as _journal_in
from _backup import record_some as _record_some
from _backup import start as _start
from _backup import stop as _stop
from _children import READY_TIMEOUT
from _children import lines as _lines
from _children import script as _script
from _children import wait_for_line as _wait_for_line

import csvjournal
from csvjournal.backup import check_backup

# -- automatic backups and retention -----------------------------------------------------


def test_an_exporting_open_takes_one_backup_a_non_exporting_open_none(csv_path: Path) -> None:
    csv_path.write_text("ID,NAME\na,Anna\nb,Bert\n")
    original = csv_path.read_bytes()
    with csvjournal.open(csv_path, key="ID") as journal:
        (first,) = journal.backups()
        # taken at the session's start: the journal as imported, the CSV as the user left it
        assert sorted(p.name for p in first.iterdir()) == ["orders.csv", "orders.csv.journal"]
        assert (first / "orders.csv").read_bytes() == original
        assert check_backup(first, "orders.csv.journal") == first / "orders.csv.journal"
        assert [row[1] for row in _dump(_journal_in(first))["rows"]] == ["a", "b"]
        journal.record("a", "COMPLETED")
    with csvjournal.open(csv_path, export=False) as journal:
        journal.record("b", "COMPLETED")
        assert journal.backups() == [first]
    with csvjournal.open(csv_path) as journal:
        assert len(journal.backups()) == 2
        assert journal.backups()[0] == first
    # a handle that stands by while another exports takes none either
    with csvjournal.open(csv_path) as exporter, csvjournal.open(csv_path) as standby:
        assert exporter.backups() == standby.backups()
        assert len(standby.backups()) == 3


@pytest.mark.parametrize("export", [True, False])
@pytest.mark.parametrize("change", ["terminal", "formula_guard"])
def test_an_open_that_changes_the_settings_backs_up_the_journal_as_it_was(
    csv_path: Path, export: bool, change: str
) -> None:
    csv_path.write_text("ID,NAME\na,Anna\n")
    csvjournal.open(csv_path, key="ID", terminal={"DONE"}).close()
    new = {"terminal": {"terminal": {"FINISHED"}}, "formula_guard": {"formula_guard": True}}[change]
    with csvjournal.open(csv_path, export=export, **new) as journal:  # type: ignore[arg-type]
        backups = journal.backups()
    assert len(backups) == (3 if export else 2)  # (and the session's, when exporting)
    before = {row[0]: row[1] for row in _dump(_journal_in(backups[1]))["settings"]}
    assert (before["terminal"], before["formula_guard"]) == ('["DONE"]', "false")


def _open_with_new_terminal(csv_path: Path, together: threading.Barrier) -> None:
    together.wait(60)  # every process started: the opens come at once
    with csvjournal.open(csv_path, terminal={"FINISHED"}, export=False) as journal:
        journal.counts()


def test_opens_that_change_the_settings_at_once_back_up_once(csv_path: Path) -> None:
    csv_path.write_text("ID\n" + "".join(f"{n}\n" for n in range(2000)))
    with csvjournal.open(csv_path, key="ID") as journal:
        before = journal.backups()
    context = multiprocessing.get_context("spawn")
    together = context.Barrier(4)
    workers = [
        context.Process(target=_open_with_new_terminal, args=(csv_path, together)) for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0] * 4
    with csvjournal.open(csv_path, export=False) as journal:
        assert len(journal.backups()) == len(before) + 1  # the one that changed them
        assert journal.settings.terminal == {"FINISHED"}


def test_retention_keeps_the_newest_n_over_sessions_and_manual_backups(csv_path: Path) -> None:
    made: list[Path] = []
    for session in range(4):
        with csvjournal.open(csv_path, key="ID", keep_backups=2) as journal:
            made.append(journal.backups()[-1])  # this session's own
            assert journal.backups() == made[-2:]
            journal.record(f"s{session}", "COMPLETED")
            for _ in range(2):
                made.append(journal.backup())
                assert journal.backups() == made[-2:]
    assert len(set(made)) == 12
    assert [p.name for p in Path(f"{csv_path}.backups").iterdir() if NAME.match(p.name)] != []
    assert _folder_listing(csv_path) == sorted(
        [*(p.name for p in made[-2:]), "exporter.lock", "writer.lock"]
    )
    assert all(not p.exists() for p in made[:-2])
    # the newest holds the last session's records
    keys = [row[1] for row in _dump(_journal_in(made[-1]))["rows"]]
    assert keys == ["s0", "s1", "s2", "s3"]


def test_keep_backups_0_takes_no_automatic_backup_and_prunes_nothing(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID", keep_backups=0) as journal:
        assert journal.backups() == []
        journal.record("a")
        made = [journal.backup() for _ in range(7)]
        assert journal.backups() == made
    with csvjournal.open(csv_path, keep_backups=0) as journal:
        assert journal.backups() == made
    with csvjournal.open(csv_path, keep_backups=3) as journal:  # the next session prunes
        assert journal.backups() == [*made[-2:], journal.backups()[-1]]


def test_backups_are_oldest_first_named_by_utc_time_to_the_microsecond(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID", keep_backups=0) as journal:
        made = []
        for n in range(6):
            journal.record(f"k{n}")
            before = datetime.now(UTC)
            made.append(journal.backup())
            after = datetime.now(UTC)
            stamp = datetime.strptime(made[-1].name, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC)
            assert before <= stamp <= after
        assert journal.backups() == made
        assert all(NAME.match(p.name) for p in made)
        assert [p.name for p in made] == sorted({p.name for p in made})  # strictly increasing
        # each holds what was recorded before it
        for n, backup in enumerate(made):
            assert [row[1] for row in _dump(_journal_in(backup))["rows"]] == [
                f"k{i}" for i in range(n + 1)
            ]


def test_a_new_backup_sorts_last_even_after_a_clock_step_back(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID", keep_backups=0) as journal:
        journal.record("a")
        future = journal.backup().rename(Path(f"{csv_path}.backups") / "20991231T235959.999999Z")
        newer = journal.backup()
        assert newer.name == "21000101T000000.000000Z"
        assert journal.backups()[-2:] == [future, newer]


def test_backup_folders_hold_a_self_contained_journal_and_the_csv(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        _record_some(journal, 0, 100)
        journal.flush(timeout=30)
        backup = journal.backup()
        # taken while the journal is open in WAL mode: the copy is one file, no -wal
        assert sorted(p.name for p in backup.iterdir()) == ["orders.csv", "orders.csv.journal"]
        with closing(sqlite3.connect(_journal_in(backup))) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
            assert conn.execute("SELECT count(*) FROM rows").fetchone()[0] == 100
        assert (backup / "orders.csv").read_bytes() == csv_path.read_bytes()


def test_a_backups_csv_is_its_own_file_untouched_by_later_edits_in_place(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        _record_some(journal, 0, 10)
    with csvjournal.open(csv_path) as journal:
        session = journal.backups()[-1]  # the CSV as this open found it
        _record_some(journal, 10, 10)
        journal.flush(timeout=30)
        backup = journal.backup()
    for folder in (session, backup):
        assert (folder / "orders.csv").stat().st_nlink == 1
    kept = (backup / "orders.csv").read_bytes()
    with csv_path.open("r+b") as handle:  # an editor that writes in place
        handle.write(b"XX")
    assert (backup / "orders.csv").read_bytes() == kept
    assert not kept.startswith(b"XX")


# -- partial backups -----------------------------------------------------------------------

BACKUP_LOOP = """
csv_path, report_path = sys.argv[1:3]
journal = csvjournal.open(csv_path, export=False, keep_backups=3)
with open(report_path, "wb", buffering=0) as report:
    report.write(b"ready\\n")
    while True:
        journal.backup()
"""


@pytest.mark.slow
def test_a_backup_killed_half_way_leaves_no_backup_and_no_leftover(tmp_path: Path) -> None:
    csv_path = tmp_path / "orders.csv"
    with csvjournal.open(csv_path, key="ID", keep_backups=0) as journal:  # no empty one
        _record_some(journal, 0, 20000)  # a few MB: a backup takes a while
    script = _script(tmp_path, "backup_loop", BACKUP_LOOP)
    for attempt in range(3):
        report, log = tmp_path / f"report-{attempt}.txt", tmp_path / f"stderr-{attempt}.txt"
        proc = _start(script, csv_path, report, log=log)
        try:
            _wait_for_line(proc, report, "ready", log)
            time.sleep(0.3 + 0.17 * attempt)
            assert proc.poll() is None, log.read_text()
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            _stop(proc)
        # whatever the kill interrupted is not listed as a backup
        with csvjournal.open(csv_path, export=False, keep_backups=3) as journal:
            for backup in journal.backups():
                check_backup(backup, "orders.csv.journal")
                assert len(_dump(_journal_in(backup))["rows"]) == 20000
            newest = journal.backup()
            assert journal.backups()[-1] == newest
            # the next backup removed what the killed one left
            assert _folder_listing(csv_path) == sorted(
                [*(p.name for p in journal.backups()), "exporter.lock", "writer.lock"]
            )


CONCURRENT_BACKUPS = """
csv_path, report_path, go, keep = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
journal = csvjournal.open(csv_path, export=False, keep_backups=keep)
with open(report_path, "wb", buffering=0) as report:
    report.write(b"ready\\n")
    while not go.exists():
        time.sleep(0.001)
    for _ in range(4):
        report.write(f"{journal.backup()}\\n".encode())
journal.close()
"""


@pytest.mark.slow
@pytest.mark.parametrize("keep", [0, 2])
def test_backups_taken_by_several_processes_at_once_all_succeed(tmp_path: Path, keep: int) -> None:
    csv_path = tmp_path / "orders.csv"
    with csvjournal.open(csv_path, key="ID", keep_backups=0) as journal:
        _record_some(journal, 0, 3000)
    go = tmp_path / "go"
    script = _script(tmp_path, "concurrent_backups", CONCURRENT_BACKUPS)
    procs = []
    try:
        for n in range(3):
            report, log = tmp_path / f"report-{n}.txt", tmp_path / f"stderr-{n}.txt"
            procs.append((_start(script, csv_path, report, go, keep, log=log), report, log))
        for proc, report, log in procs:
            _wait_for_line(proc, report, "ready", log)
        go.touch()
        for proc, _, log in procs:
            _finish(proc, log)
    finally:
        for proc, _, _ in procs:
            _stop(proc)
    made = [Path(line) for _, report, _ in procs for line in _lines(report)[1:]]
    assert len(made) == len(set(made)) == 12
    found = csvjournal.open(csv_path, export=False, keep_backups=0)
    try:
        listed = found.backups()
    finally:
        found.close()
    assert set(listed) <= set(made)
    assert len(listed) == (12 if keep == 0 else keep)
    for backup in listed:
        check_backup(backup, "orders.csv.journal")
    assert _folder_listing(csv_path) == sorted(
        [*(p.name for p in listed), "exporter.lock", "writer.lock"]
    )


# -- a backup while workers record -------------------------------------------------------

WORKERS = 4

# Records w<i>-0, w<i>-1, ... one by one until the stop file exists.
RECORDER = """
csv_path, report_path, worker, stop = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
journal = csvjournal.open(csv_path, export=False)
with open(report_path, "wb", buffering=0) as report:
    report.write(b"ready\\n")
    n = 0
    while not stop.exists():
        journal.record(f"w{worker}-{n}", ("COMPLETED", "FAILED")[n % 2], N=n, W=worker)
        if n % 3 == 0:  # and a second event on some rows
            journal.record(f"w{worker}-{n}", "RETRIED", NOTE=f"again {n}")
        n += 1
    report.write(f"done {n}\\n".encode())
journal.close()
"""


def _check_consistent(journal_path: Path) -> dict[int, int]:
    """Check that a backup is one commit's snapshot; return {worker: rows it holds}."""
    with closing(sqlite3.connect(f"{journal_path.resolve().as_uri()}?mode=ro", uri=True)) as c:
        assert c.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        events = {
            seq: (key, status, prev)
            for seq, key, status, prev in c.execute("SELECT seq, key, status, prev FROM events")
        }
        rows = dict(c.execute("SELECT key, status FROM rows").fetchall())
        trails: dict[str, list[int]] = {}
        for key, last in c.execute("SELECT key, last FROM rows"):
            trail, seq = [], last
            while seq is not None:  # each row's events, newest first, along their links
                trail.append(seq)
                seq = events[seq][2]
            trails[key] = trail[::-1]
        in_rows = [seq for trail in trails.values() for seq in trail]
    # every event seq in the rows is in the events and vice versa; none missing in between
    assert sorted(in_rows) == sorted(events) == list(range(1, len(events) + 1))
    assert {key for key, _, _ in events.values()} == set(rows)
    for key, trail in trails.items():
        assert all(events[seq][0] == key for seq in trail)
        assert events[trail[-1]][1] == rows[key]  # the row shows its last event
    # each worker recorded one key after the other: a snapshot holds a prefix of them
    held: dict[int, int] = {}
    for worker in range(WORKERS):
        numbers = sorted(int(k.split("-")[1]) for k in rows if k.startswith(f"w{worker}-"))
        assert numbers == list(range(len(numbers)))
        held[worker] = len(numbers)
        # a row with a second event has it unless it is the last row the worker began
        for n in numbers[:-1]:
            if n % 3 == 0:
                assert rows[f"w{worker}-{n}"] == "RETRIED"
    return held


@pytest.mark.slow
def test_a_backup_taken_while_4_workers_record_is_a_consistent_snapshot(tmp_path: Path) -> None:
    csv_path = tmp_path / "orders.csv"
    stop = tmp_path / "stop"
    script = _script(tmp_path, "recorder", RECORDER)
    with csvjournal.open(csv_path, key="ID", keep_backups=0) as journal:
        procs = []
        try:
            for n in range(WORKERS):
                report, log = tmp_path / f"report-{n}.txt", tmp_path / f"stderr-{n}.txt"
                procs.append((_start(script, csv_path, report, n, stop, log=log), report, log))
            for proc, report, log in procs:
                _wait_for_line(proc, report, "ready", log)
            deadline = time.monotonic() + READY_TIMEOUT
            while len(journal) < 100:
                assert time.monotonic() < deadline, "the workers hardly record"
                time.sleep(0.05)
            backups = []
            for _ in range(4):
                backups.append(journal.backup())
                copied = len(_dump(_journal_in(backups[-1]))["rows"])
                while len(journal) <= copied:  # the workers go on past each backup
                    assert time.monotonic() < deadline + READY_TIMEOUT, "the workers stopped"
                    time.sleep(0.05)
            stop.touch()
            for proc, _, log in procs:
                _finish(proc, log)
        finally:
            stop.touch()
            for proc, _, _ in procs:
                _stop(proc)
        final = len(journal)

    sizes = []
    for backup in backups:
        assert check_backup(backup, "orders.csv.journal")
        held = _check_consistent(_journal_in(backup))
        sizes.append(sum(held.values()))
    # taken while the workers recorded: each holds more than the one before, less than all
    assert sizes == sorted(set(sizes)), sizes
    assert sizes[0] >= 100
    assert sizes[-1] < final
    done = [int(_lines(report)[-1].split()[1]) for _, report, _ in procs]
    assert final == sum(done)
