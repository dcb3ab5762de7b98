"""Backups and restore: one per exporting open, retention, consistent copies taken while
worker processes record, restore round trips and refusals, a backup before a schema upgrade.

Child processes are real Python processes running scripts written into ``tmp_path``; they
log to stderr (structlog prints to stdout by default) and report on files of their own.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

import csvjournal
from csvjournal import _migrate
from csvjournal.backup import check_backup

READY_TIMEOUT = 60.0  # seconds a child may take to start, import and open the journal
NAME = re.compile(r"^\d{8}T\d{6}\.\d{6}Z$")
FIXTURES = Path(__file__).parent / "fixtures"

PRELUDE = """\
import json
import os
import sys
import time
from pathlib import Path

import structlog

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

import csvjournal
"""

# -- helpers -----------------------------------------------------------------------------


def _script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(PRELUDE + body)
    return path


def _start(script: Path, *args: object, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, str(script), *map(str, args)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def _lines(report: Path) -> list[str]:
    if not report.exists():
        return []
    return [line.decode() for line in report.read_bytes().split(b"\n")[:-1]]


def _wait_for_line(proc: subprocess.Popen[bytes], report: Path, line: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while line not in _lines(report):
        assert proc.poll() is None, f"child ended early ({proc.returncode}):\n{log.read_text()}"
        assert time.monotonic() < deadline, f"child never reported {line!r}"
        time.sleep(0.01)


def _finish(proc: subprocess.Popen[bytes], log: Path) -> None:
    try:
        code = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    assert code == 0, f"child failed ({code}):\n{log.read_text()}"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _folder_listing(csv_path: Path) -> list[str]:
    return sorted(p.name for p in Path(f"{csv_path}.backups").iterdir())


def _journal_in(backup: Path) -> Path:
    return backup / "orders.csv.journal"


def _dump(journal_path: Path) -> dict[str, list[tuple[object, ...]]]:
    """The journal's content straight from SQLite, without the exporter's notes and its cache
    of rendered records (``rows.line`` and ``lines_format``, which an exporter may save at any
    idle moment). Read-write, not ``mode=ro``: a read-only connection leaves a WAL journal's
    -wal/-shm."""
    with closing(sqlite3.connect(journal_path)) as c:
        return {
            "rows": c.execute(
                "SELECT pos, key, status, cells, last, lease_until, holder, attempts, done"
                " FROM rows ORDER BY pos"
            ).fetchall(),
            "events": c.execute("SELECT * FROM events ORDER BY seq").fetchall(),
            "columns": c.execute("SELECT * FROM columns ORDER BY pos").fetchall(),
            "settings": c.execute(
                "SELECT * FROM settings WHERE name NOT LIKE 'csv%' AND name != 'lines_format'"
                " ORDER BY name"
            ).fetchall(),
        }


def _revision(journal_path: Path) -> str:
    with closing(sqlite3.connect(journal_path)) as c:
        return str(c.execute("SELECT version_num FROM alembic_version").fetchone()[0])


def _damage(journal_path: Path) -> None:
    """Overwrite a leaf page in the middle of the rows b-tree of a closed journal."""
    with closing(sqlite3.connect(journal_path)) as conn:
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        leaves = [
            n
            for (n,) in conn.execute(
                "SELECT pageno FROM dbstat WHERE name = 'rows' AND pagetype = 'leaf'"
                " ORDER BY pageno"
            )
        ]
    assert len(leaves) >= 5
    with journal_path.open("r+b") as file:
        file.seek((leaves[len(leaves) // 2] - 1) * size)
        file.write(b"\xde\xad\xbe\xef" * (size // 4))


def _record_some(journal: csvjournal.Journal, start: int, count: int) -> None:
    with journal.batch():
        for n in range(start, start + count):
            journal.record(f"k{n:05d}", "COMPLETED" if n % 4 else "FAILED", N=n, NOTE="x" * 40)


def _csv_keys(path: Path) -> list[str]:
    text = path.read_bytes().decode("utf-8-sig")
    return [row["ID"] for row in csv.DictReader(io.StringIO(text, newline=""))]


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


# -- restore -----------------------------------------------------------------------------


def test_restore_round_trip(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID", keep_backups=10) as journal:
        _record_some(journal, 0, 300)
        journal.record("k00007", "RETRIED", EXTRA="only before the backup")
        journal.flush(timeout=30)
        backup = journal.backup()
        _record_some(journal, 250, 100)  # changes rows and adds some
        journal.record("k00008", "FAILED", LATER="a column the backup does not know")
    saved = _dump(Path(f"{csv_path}.journal"))
    saved_csv = csv_path.read_bytes()
    with csvjournal.open(csv_path, export=False) as journal:
        before = set(journal.backups())

    safety = csvjournal.restore(csv_path, backup)

    assert safety is not None
    assert NAME.match(safety.name)
    assert safety.parent == backup.parent
    with csvjournal.open(csv_path, export=False) as journal:
        assert set(journal.backups()) == before | {safety}
        assert journal.backups()[-1] == safety
    # the journal is the backed-up one, the CSV byte for byte the backup's copy
    assert _dump(Path(f"{csv_path}.journal")) == _dump(_journal_in(backup))
    assert csv_path.read_bytes() == (backup / "orders.csv").read_bytes()
    assert "LATER" not in csv_path.read_text()
    # the state before the restore is in the safety backup
    assert _dump(_journal_in(safety)) == saved
    assert (safety / "orders.csv").read_bytes() == saved_csv
    assert sorted(p.name for p in csv_path.parent.iterdir()) == [
        "orders.csv",
        "orders.csv.backups",
        "orders.csv.journal",
    ]
    # and the restored journal works on: new records number on from the backup's
    with csvjournal.open(csv_path) as journal:
        last = max(e[0] for e in _dump(_journal_in(backup))["events"])  # type: ignore[type-var]
        assert journal.record("after", "COMPLETED") == last + 1  # type: ignore[operator]
        assert len(journal) == 301
    assert _csv_keys(csv_path)[-1] == "after"
    # restoring the safety backup undoes the restore
    csvjournal.restore(csv_path, safety)
    assert _dump(Path(f"{csv_path}.journal")) == saved
    assert csv_path.read_bytes() == saved_csv


def test_restore_of_the_oldest_backup_survives_retention(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID", keep_backups=2) as journal:
        journal.record("a", "COMPLETED")
        journal.flush(timeout=30)
        oldest = journal.backup()
        journal.record("b", "COMPLETED")
        journal.backup()
        assert journal.backups()[0] == oldest
    expected = _dump(_journal_in(oldest))
    safety = csvjournal.restore(csv_path, oldest, keep_backups=2)
    assert safety is not None
    assert safety.exists()
    assert _dump(Path(f"{csv_path}.journal")) == expected
    assert _csv_keys(csv_path) == ["a"]
    with csvjournal.open(csv_path, export=False) as journal:
        assert len(journal.backups()) == 2
        assert journal.backups()[-1] == safety


def test_restore_without_a_journal_puts_the_backup_in_place(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a", "COMPLETED", N=1)
        journal.flush(timeout=30)
        backup = journal.backup()
    Path(f"{csv_path}.journal").unlink()
    csv_path.unlink()
    assert csvjournal.restore(csv_path, backup) is None
    assert _dump(Path(f"{csv_path}.journal")) == _dump(_journal_in(backup))
    assert csv_path.read_bytes() == (backup / "orders.csv").read_bytes()


def test_restore_refuses_a_damaged_backup_and_changes_nothing(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        _record_some(journal, 0, 3000)
        journal.flush(timeout=30)
        backup = journal.backup()
        journal.record("later", "COMPLETED")
    _damage(_journal_in(backup))
    journal_path = Path(f"{csv_path}.journal")
    digests = (_digest(journal_path), _digest(csv_path))
    listing = sorted(p.name for p in csv_path.parent.iterdir())
    backups = _folder_listing(csv_path)

    with pytest.raises(csvjournal.JournalCorruptError, match="integrity") as caught:
        csvjournal.restore(csv_path, backup)

    assert isinstance(caught.value, RuntimeError)
    assert str(_journal_in(backup)) in str(caught.value)
    assert (_digest(journal_path), _digest(csv_path)) == digests
    assert sorted(p.name for p in csv_path.parent.iterdir()) == listing
    assert _folder_listing(csv_path) == backups
    with csvjournal.open(csv_path) as journal:
        assert journal.get("later") is not None


def test_restore_refuses_a_folder_that_is_not_a_backup(csv_path: Path, tmp_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a")
    digest = _digest(Path(f"{csv_path}.journal"))
    with pytest.raises(FileNotFoundError):
        csvjournal.restore(csv_path, tmp_path / "nowhere")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "orders.csv.journal").write_bytes(b"not a database at all" * 100)
    with pytest.raises(csvjournal.JournalCorruptError):
        csvjournal.restore(csv_path, tmp_path / "junk")
    assert _digest(Path(f"{csv_path}.journal")) == digest


HOLDER = """
csv_path, report_path, export = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
journal = csvjournal.open(csv_path, export=export)
journal.record("held", "COMPLETED")
journal.flush(timeout=60)
journal._wait_for_session_backup()  # its folder would appear under the test's eyes
with open(report_path, "wb", buffering=0) as report:
    report.write(b"ready\\n")
    time.sleep(600)
"""


@pytest.mark.slow
@pytest.mark.parametrize("export", [True, False], ids=["exporting", "non-exporting"])
def test_restore_is_refused_while_another_process_has_the_journal(
    tmp_path: Path, export: bool
) -> None:
    csv_path = tmp_path / "orders.csv"
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a", "COMPLETED")
        journal.flush(timeout=30)
        backup = journal.backup()
    report, log = tmp_path / "report.txt", tmp_path / "stderr.txt"
    proc = _start(_script(tmp_path, "holder", HOLDER), csv_path, report, int(export), log=log)
    try:
        _wait_for_line(proc, report, "ready", log)
        journal_path = Path(f"{csv_path}.journal")
        state = (_dump(journal_path), csv_path.read_bytes(), _folder_listing(csv_path))
        with pytest.raises(csvjournal.JournalBusyError) as caught:
            csvjournal.restore(csv_path, backup)
        assert isinstance(caught.value, TimeoutError)
        assert str(csv_path) in str(caught.value)
        assert (_dump(journal_path), csv_path.read_bytes(), _folder_listing(csv_path)) == state
        assert proc.poll() is None
    finally:
        _stop(proc)
    # once it is gone, the restore goes ahead
    assert csvjournal.restore(csv_path, backup) is not None
    assert _csv_keys(csv_path) == ["a"]


@pytest.mark.parametrize("export", [True, False], ids=["exporting", "non-exporting"])
def test_restore_is_refused_while_this_process_has_the_journal_open(
    csv_path: Path, export: bool
) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a", "COMPLETED")
        journal.flush(timeout=30)
        backup = journal.backup()
    with csvjournal.open(csv_path, export=export) as journal:
        journal.record("b", "COMPLETED")
        with pytest.raises(csvjournal.JournalBusyError):
            csvjournal.restore(csv_path, backup)
        # the handle's records still land in the journal
        journal.record("c", "COMPLETED")
    with csvjournal.open(csv_path, export=False) as journal:
        assert [journal.get(k) is not None for k in "abc"] == [True, True, True]


# -- before a schema upgrade -------------------------------------------------------------


@pytest.mark.parametrize("export", [True, False], ids=["exporting", "non-exporting"])
def test_an_old_journal_is_backed_up_before_its_schema_upgrade(
    csv_path: Path, export: bool
) -> None:
    fixture = FIXTURES / "journal-0001.sqlite"
    journal_path = Path(f"{csv_path}.journal")
    shutil.copyfile(fixture, journal_path)
    old = _dump_old(journal_path)  # the copy: reading a WAL file leaves -wal/-shm beside it
    with csvjournal.open(csv_path, export=export) as journal:
        found = journal.backups()
        assert len(found) == (2 if export else 1)  # the upgrade's, then the session's
        upgrade_backup = found[0]
        assert check_backup(upgrade_backup, journal_path.name)
        assert _revision(_journal_in(upgrade_backup)) == "0001"
        assert _dump_old(_journal_in(upgrade_backup)) == old
        if export:
            assert _revision(_journal_in(found[1])) == _migrate.head_revision()
        assert journal.get("PO-1") is not None
    assert _revision(journal_path) == _migrate.head_revision()
    # and that backup restores: the old journal comes back and is upgraded again
    csvjournal.restore(csv_path, upgrade_backup)
    with csvjournal.open(csv_path) as journal:
        assert [e.status for e in journal.history("PO-2")] == ["FAILED", "NO_ATTACHMENTS"]
        assert journal.pending() == ["PO-3"]


def _dump_old(path: Path) -> list[tuple[object, ...]]:
    """Rows and events in a form every revision shares."""
    with closing(sqlite3.connect(path)) as c:
        return [
            *c.execute("SELECT key, status, cells FROM rows ORDER BY pos"),
            *c.execute("SELECT seq, key, status, fields FROM events ORDER BY seq"),
        ]


def test_restore_replaces_a_journal_sqlite_cannot_read_and_keeps_its_files(
    tmp_path: Path,
) -> None:
    csv_path = tmp_path / "orders.csv"
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a", "COMPLETED")
        good = journal.backup()
        journal.record("b", "FAILED")
    journal_path = Path(f"{csv_path}.journal")
    damaged = b"not a database any more" + journal_path.read_bytes()[23:]
    journal_path.write_bytes(damaged)
    safety = csvjournal.restore(csv_path, good)
    assert safety is not None
    assert (safety / journal_path.name).read_bytes() == damaged  # kept as it was
    with csvjournal.open(csv_path) as journal:
        assert journal.get("a") is not None
        assert journal.get("b") is None


def test_restore_refuses_the_journals_own_folder(tmp_path: Path) -> None:
    csv_path = tmp_path / "orders.csv"
    csvjournal.open(csv_path, key="ID").close()
    before = Path(f"{csv_path}.journal").read_bytes()
    with pytest.raises(FileNotFoundError, match="own folder"):
        csvjournal.restore(csv_path, tmp_path)
    assert Path(f"{csv_path}.journal").read_bytes() == before
