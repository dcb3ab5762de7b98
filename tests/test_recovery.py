"""Recovery after a crash: kill -9 of a whole job, expired leases, leftover temp files, a
stale CSV, and a damaged journal (refused, naming the backup to restore).

Child processes are real Python processes running scripts written into ``tmp_path``; they
log to stderr (structlog prints to stdout by default) and report on files of their own,
one unbuffered line at a time, written only after the call they report returned.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

import csvjournal
from csvjournal.backup import check_backup
from csvjournal.csvio import temp_prefix

READY_TIMEOUT = 60.0  # seconds a child may take to start, import and open the journal

# -- helpers -----------------------------------------------------------------------------

PRELUDE = """\
import json
import sys
import time

import structlog

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

import csvjournal
"""


def _script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(PRELUDE + body)
    return path


def _start(
    script: Path, *args: object, log: Path, stdin: int | None = None
) -> subprocess.Popen[bytes]:
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, str(script), *map(str, args)],
            stdin=stdin,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,  # its own process group: the whole job is killed
        )


def _lines(report: Path) -> list[str]:
    """The complete lines of a report; a last line without its newline is ignored."""
    if not report.exists():
        return []
    return [line.decode() for line in report.read_bytes().split(b"\n")[:-1]]


def _wait_for_lines(
    proc: subprocess.Popen[bytes], report: Path, count: int, log: Path
) -> list[str]:
    deadline = time.monotonic() + READY_TIMEOUT
    while len(lines := _lines(report)) < count:
        assert proc.poll() is None, f"child ended early ({proc.returncode}):\n{log.read_text()}"
        assert time.monotonic() < deadline, f"child reported {len(lines)} of {count} lines"
        time.sleep(0.005)
    return lines


def _kill_job(proc: subprocess.Popen[bytes], log: Path) -> None:
    """SIGKILL the child's whole process group; the child must still be running."""
    assert proc.poll() is None, f"child ended early ({proc.returncode}):\n{log.read_text()}"
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _csv_rows(path: Path, key: str = "ID") -> list[dict[str, str]]:
    text = path.read_bytes().decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert all(None not in row and None not in row.values() for row in rows), "ragged CSV"
    assert len({row[key] for row in rows}) == len(rows)
    return rows


def _csv_status(path: Path) -> dict[str, str]:
    return {row["ID"]: row["STATUS"] for row in _csv_rows(path)}


def _write_input(path: Path, keys: list[str]) -> None:
    path.write_text("ID,NAME\n" + "".join(f"{key},name of {key}\n" for key in keys))


def _leaf_page_of(journal_path: Path, table: str) -> tuple[int, int]:
    """(page number, page size) of a leaf page of ``table`` in the middle of its b-tree."""
    with closing(sqlite3.connect(journal_path)) as conn:
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        leaves = [
            n
            for (n,) in conn.execute(
                "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno",
                (table,),
            )
        ]
    assert len(leaves) >= 3, f"{table} is too small to damage in the middle"
    return leaves[len(leaves) // 2], size


def _damage(journal_path: Path, table: str = "rows") -> None:
    """Overwrite one leaf page of ``table`` in the middle of a closed journal with junk."""
    assert not Path(f"{journal_path}-wal").exists(), "the journal must be closed"
    page, size = _leaf_page_of(journal_path, table)
    with journal_path.open("r+b") as file:
        file.seek((page - 1) * size)
        file.write(bytes(range(7, 256)) * (size // 249) + b"\xa5" * (size % 249))


def _make_journal(csv_path: Path, rows: int, **options: object) -> None:
    """A closed journal of ``rows`` rows with a few fields each."""
    journal = csvjournal.open(csv_path, key="ID", **options)  # type: ignore[arg-type]
    with journal, journal.batch():
        for n in range(rows):
            status = "COMPLETED" if n % 3 else "FAILED"
            journal.record(f"k{n:05d}", status, NOTE=f"note {n} " * 4, N=n)


# -- 1. the job killed at item 200 -------------------------------------------------------

ITEMS = 446
KILL_AT = 200

# The job: an exporting open (it imports the CSV), then record() row by row in CSV order.
# Before each item it reads a go-ahead line from stdin (the parent sends KILL_AT of them and
# then closes stdin, so the job stops at item KILL_AT+1 and waits to be killed); each key is
# reported after record() returned.
JOB = """
csv_path, report_path = sys.argv[1:3]
journal = csvjournal.open(csv_path, key="ID", durability="full")
with open(report_path, "wb", buffering=0) as report:
    for n, key in enumerate(journal.pending()):
        if not sys.stdin.readline():
            time.sleep(600)
        journal.record(key, "COMPLETED", N=n)
        report.write(f"{key}\\n".encode())
"""


@pytest.mark.slow
def test_a_job_killed_at_item_200_resumes_with_exactly_the_unfinished_rows(
    tmp_path: Path,
) -> None:
    csv_path = tmp_path / "orders.csv"
    # CSV order differs from sorted order: pending() must follow the CSV.
    keys = [f"PO-{n * 7919 % 1000:04d}" for n in range(ITEMS)]
    assert len(set(keys)) == ITEMS
    assert keys != sorted(keys)
    _write_input(csv_path, keys)
    report, log = tmp_path / "report.txt", tmp_path / "stderr.txt"

    proc = _start(_script(tmp_path, "job", JOB), csv_path, report, log=log, stdin=subprocess.PIPE)
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"go\n" * KILL_AT)
        proc.stdin.close()
        done = _wait_for_lines(proc, report, KILL_AT, log)
        _kill_job(proc, log)  # at once: its exporter may not have caught up
    finally:
        _stop(proc)
    assert done == keys[:KILL_AT]
    assert len(_csv_rows(csv_path)) == ITEMS  # whatever it shows, the CSV is whole

    with csvjournal.open(csv_path, key="ID") as journal:
        # before any flush: the exporting open brought the CSV up to date
        on_disk = _csv_rows(csv_path)
        assert [row["ID"] for row in on_disk] == keys
        assert [row["STATUS"] for row in on_disk] == ["COMPLETED"] * KILL_AT + ["PENDING"] * (
            ITEMS - KILL_AT
        )
        assert [row["N"] for row in on_disk[:KILL_AT]] == [str(n) for n in range(KILL_AT)]
        assert all(row["N"] == "" for row in on_disk[KILL_AT:])
        assert all(row["LAST_PROCESSED"].endswith("Z") for row in on_disk[:KILL_AT])

        assert journal.pending() == keys[KILL_AT:]
        assert len(journal.pending()) == ITEMS - KILL_AT == 246
        assert journal.counts() == {"COMPLETED": KILL_AT, "PENDING": ITEMS - KILL_AT}
        assert [e.status for e in journal.history(keys[KILL_AT - 1])] == ["COMPLETED"]
        assert journal.history(keys[KILL_AT]) == []
        report_after = journal.recover()
        assert report_after.pending == ITEMS - KILL_AT
        assert report_after.expired == ()
        assert not report_after.csv_was_stale


# -- 2. expired leases -------------------------------------------------------------------

LEASE = 1.0
CLAIMED = 3

# A worker that claims rows with a short lease and is killed before finishing them.
CLAIMER = """
csv_path, report_path, lease = sys.argv[1], sys.argv[2], float(sys.argv[3])
journal = csvjournal.open(csv_path, export=False)
keys = journal.claim(int(sys.argv[4]), lease=lease)
with open(report_path, "wb", buffering=0) as report:
    report.write((json.dumps(keys) + "\\n").encode())
    time.sleep(600)
"""


def _lose_a_worker(tmp_path: Path, csv_path: Path, claimed: int = CLAIMED) -> tuple[list[str], str]:
    """Run a worker that claims ``claimed`` rows and kill it; return its keys and its name.
    Returns once every lease it held has run out."""
    report, log = tmp_path / "claimer.txt", tmp_path / "claimer-stderr.txt"
    proc = _start(_script(tmp_path, "claimer", CLAIMER), csv_path, report, LEASE, claimed, log=log)
    try:
        (line,) = _wait_for_lines(proc, report, 1, log)
        _kill_job(proc, log)
    finally:
        _stop(proc)
    keys: list[str] = json.loads(line)
    with closing(sqlite3.connect(f"{csv_path}.journal")) as conn:
        held = conn.execute(
            "SELECT key, status, holder, lease_until FROM rows WHERE holder IS NOT NULL"
        ).fetchall()
    worker = f"{socket.gethostname()}:{proc.pid}:MainThread"
    assert sorted(k for k, *_ in held) == sorted(keys)
    assert {(status, holder) for _, status, holder, _ in held} == {("IN_PROGRESS", worker)}
    until = max(lease_until for *_, lease_until in held)
    time.sleep(max(0.0, until - time.time()) + 0.05)
    return keys, worker


def _check_returned(journal: csvjournal.Journal, keys: list[str], worker: str) -> None:
    for key in keys:
        row = journal.get(key)
        assert row is not None
        assert row["STATUS"] == "PENDING"
        trail = journal.history(key)
        assert [e.status for e in trail] == ["IN_PROGRESS", "PENDING"]  # imported: no event
        assert trail[-1].note == f"lease of {worker} expired"
        assert worker in (trail[-1].note or "")


@pytest.mark.slow
@pytest.mark.parametrize("export", [True, False], ids=["exporting", "non-exporting"])
def test_recover_returns_expired_leases_naming_the_lost_worker(
    tmp_path: Path, export: bool
) -> None:
    csv_path = tmp_path / "orders.csv"
    keys = [f"k{n}" for n in range(10)]
    _write_input(csv_path, keys)
    with csvjournal.open(csv_path, key="ID", export=export) as journal:
        journal.record("k0", "COMPLETED")
        journal.flush(timeout=30)
        lost, worker = _lose_a_worker(tmp_path, csv_path)
        assert lost == keys[1 : 1 + CLAIMED]  # claims go in CSV order
        # the lease ran out: pending again at once, though the row still says IN_PROGRESS
        assert journal.pending() == keys[1:]
        assert journal.get(lost[0])["STATUS"] == "IN_PROGRESS"  # type: ignore[index]

        report = journal.recover()

        assert report.integrity == "ok"
        assert report.expired == tuple((key, worker) for key in lost)
        assert report.pending == len(keys) - 1 == len(journal.pending())
        _check_returned(journal, lost, worker)
        assert _csv_status(csv_path) == {"k0": "COMPLETED"} | dict.fromkeys(keys[1:], "PENDING")
        lines = report.lines()
        assert lines[0] == "integrity check: ok"
        assert f"expired leases returned to PENDING: {CLAIMED} (lost workers: {worker})" in lines
        assert f"pending rows: {len(keys) - 1}" in lines
        assert all(isinstance(line, str) and "\n" not in line for line in lines)

        again = journal.recover()  # nothing left to do
        assert again.expired == ()
        assert "expired leases returned to PENDING: 0" in again.lines()
        assert [e.status for e in journal.history(lost[0])][-1] == "PENDING"
        assert len(journal.history(lost[0])) == 2


@pytest.mark.slow
def test_an_exporting_open_returns_expired_leases_itself(tmp_path: Path) -> None:
    csv_path = tmp_path / "orders.csv"
    keys = [f"k{n}" for n in range(8)]
    _write_input(csv_path, keys)
    csvjournal.open(csv_path, key="ID").close()
    lost, worker = _lose_a_worker(tmp_path, csv_path, claimed=2)
    with csvjournal.open(csv_path) as journal:
        # right after open, before any other call: PENDING in the journal and in the CSV
        on_disk = _csv_status(csv_path)
        _check_returned(journal, lost, worker)
        assert on_disk == dict.fromkeys(keys, "PENDING")
        # shown by the open's one export, rendered before the leases were returned
        assert journal._exporter is not None
        assert journal._exporter.exports == 1
        journal.export(tmp_path / "from-journal.csv")
        assert (tmp_path / "from-journal.csv").read_bytes() == csv_path.read_bytes()
        assert journal.pending() == keys
        assert journal.recover().expired == ()  # the open did it already


_RECORD_AND_DIE = """
import os, sys, csvjournal
journal = csvjournal.open(sys.argv[1], export=False)
journal.record(sys.argv[2], "COMPLETED")
os._exit(0)  # no close(): it would wait for the exporter, which waits for this
"""


@pytest.mark.slow
@pytest.mark.parametrize("racer", ["a-lost-row", "another-row"])
def test_a_commit_racing_the_opens_first_export_is_shown(
    tmp_path: Path, racer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from csvjournal._handle import Handle

    csv_path = tmp_path / "orders.csv"
    keys = [f"k{n}" for n in range(8)]
    _write_input(csv_path, keys)
    csvjournal.open(csv_path, key="ID").close()
    lost, _ = _lose_a_worker(tmp_path, csv_path, claimed=2)
    key = lost[0] if racer == "a-lost-row" else keys[-1]
    confirm = Handle._confirm_session

    def raced(self: Handle) -> list[str]:  # another process commits before the open's write
        done = subprocess.run(
            [sys.executable, "-c", _RECORD_AND_DIE, str(csv_path), key],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return confirm(self)

    monkeypatch.setattr(Handle, "_confirm_session", raced)
    with csvjournal.open(csv_path) as journal:
        on_disk = csv_path.read_bytes()
        journal.export(tmp_path / "from-journal.csv")
        assert (tmp_path / "from-journal.csv").read_bytes() == on_disk
        assert journal.get(key)["STATUS"] == "COMPLETED"  # type: ignore[index]
        assert _csv_status(csv_path)[key] == "COMPLETED"
        assert _csv_status(csv_path)[lost[1]] == "PENDING"


@pytest.mark.slow
def test_a_non_exporting_open_leaves_expired_leases_to_recovery(tmp_path: Path) -> None:
    csv_path = tmp_path / "orders.csv"
    keys = [f"k{n}" for n in range(5)]
    _write_input(csv_path, keys)
    csvjournal.open(csv_path, key="ID").close()
    lost, worker = _lose_a_worker(tmp_path, csv_path, claimed=2)
    with csvjournal.open(csv_path, export=False) as journal:
        assert journal.get(lost[0])["STATUS"] == "IN_PROGRESS"  # type: ignore[index]
        assert journal.pending() == keys  # pending all the same: the leases ran out
        assert journal.recover().expired == tuple((key, worker) for key in lost)
        _check_returned(journal, lost, worker)


def test_recover_ignores_live_leases(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        for n in range(4):
            journal.record(f"k{n}")
        claimed = journal.claim(2, lease=300)
        report = journal.recover()
        assert report.expired == ()
        assert report.pending == 2
        assert [journal.get(k)["STATUS"] for k in claimed] == ["IN_PROGRESS"] * 2  # type: ignore[index]


# -- 2. leftover temporary files ---------------------------------------------------------


def _leftover(csv_path: Path, name: str = "killed1") -> Path:
    path = csv_path.parent / f"{temp_prefix(csv_path)}{name}"
    path.write_bytes(b"ID,STATUS\nhalf an expo")
    return path


def test_recover_removes_leftover_temp_files_when_no_exporter_is_alive(csv_path: Path) -> None:
    csvjournal.open(csv_path, key="ID").close()
    with csvjournal.open(csv_path, export=False) as journal:
        leftovers = [_leftover(csv_path, "a1"), _leftover(csv_path, "b2")]
        unrelated = csv_path.parent / "orders.csv.tmp"  # not ours: left alone
        unrelated.write_bytes(b"x")
        report = journal.recover()
        assert sorted(report.temp_files_removed) == sorted(leftovers)
        assert not any(path.exists() for path in leftovers)
        assert unrelated.exists()
        assert "temporary files removed: 2" in report.lines()
        assert journal.recover().temp_files_removed == ()


def test_recover_leaves_temp_files_to_a_live_exporter(csv_path: Path) -> None:
    # A temp file beside the CSV may be the live exporter's export in progress.
    with csvjournal.open(csv_path, key="ID") as exporter:
        exporter.record("a", "COMPLETED")
        with csvjournal.open(csv_path, export=False) as journal:
            leftover = _leftover(csv_path)
            report = journal.recover()
            assert report.temp_files_removed == ()
            assert leftover.exists()
            assert _csv_status(csv_path) == {"a": "COMPLETED"}
    leftover.unlink()


def test_an_exporting_open_removes_leftover_temp_files_and_recover_reports_them(
    csv_path: Path,
) -> None:
    csvjournal.open(csv_path, key="ID").close()
    leftover = _leftover(csv_path)
    with csvjournal.open(csv_path) as journal:
        assert not leftover.exists()
        assert journal.recover().temp_files_removed == (leftover,)
    assert sorted(p.name for p in csv_path.parent.iterdir()) == [
        "orders.csv",
        "orders.csv.backups",
        "orders.csv.journal",
    ]


# -- 2. a stale CSV ----------------------------------------------------------------------


def test_recover_regenerates_a_stale_csv_and_only_then(csv_path: Path) -> None:
    csvjournal.open(csv_path, key="ID").close()
    with csvjournal.open(csv_path, export=False) as journal:  # nobody exports
        journal.record("a", "COMPLETED")
        journal.record("b", "FAILED")
        assert _csv_status(csv_path) == {}
        report = journal.recover()
        assert report.csv_was_stale
        assert "CSV: regenerated" in report.lines()
        assert _csv_status(csv_path) == {"a": "COMPLETED", "b": "FAILED"}
        assert report.pending == 1

        before = csv_path.read_bytes()
        inode = csv_path.stat().st_ino
        report = journal.recover()
        assert not report.csv_was_stale
        assert "CSV: already current" in report.lines()
        assert csv_path.read_bytes() == before
        assert csv_path.stat().st_ino == inode  # not even rewritten


def test_recover_on_the_exporter_after_flush_finds_the_csv_current(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a", "COMPLETED")
        journal.flush(timeout=30)
        report = journal.recover()
        assert not report.csv_was_stale
        assert report.pending == 0
        assert report.expired == ()


@pytest.mark.parametrize("export", [True, False], ids=["exporting", "non-exporting"])
def test_recover_writes_a_deleted_csv_anew(csv_path: Path, export: bool) -> None:
    csvjournal.open(csv_path, key="ID").close()
    with csvjournal.open(csv_path, export=export) as journal:
        journal.record("a", "COMPLETED")
        journal.flush(timeout=30)
        csv_path.unlink()
        report = journal.recover()
        assert csv_path.exists(), "recover() left the CSV missing"
        assert _csv_status(csv_path) == {"a": "COMPLETED"}
        # An exporter thread notices a deleted CSV within a poll: it may have written it
        # before recover() looked.
        assert report.csv_was_stale or export


# -- 3. a damaged journal ----------------------------------------------------------------

CORRUPT_ROWS = 3000


@pytest.mark.parametrize(
    ("table", "export"),
    [
        ("rows", True),
        ("rows", False),
        ("events", True),
        ("sqlite_autoindex_rows_1", True),  # the keys' index
        ("free_rows", True),
    ],
    ids=[
        "rows-exporting",
        "rows-non-exporting",
        "events-exporting",
        "index-exporting",
        "free-rows-exporting",
    ],
)
def test_a_damaged_journal_is_refused_naming_a_backup_that_restores(
    tmp_path: Path, table: str, export: bool
) -> None:
    csv_path = tmp_path / "orders.csv"
    journal_path = Path(f"{csv_path}.journal")
    _make_journal(csv_path, CORRUPT_ROWS, keep_backups=3)
    with csvjournal.open(csv_path, keep_backups=3) as journal:  # a second session
        journal.record("k00001", "COMPLETED")
        good = journal.backup()
    assert check_backup(good, journal_path.name)
    _damage(journal_path, table)
    listing = sorted(p.name for p in Path(f"{csv_path}.backups").iterdir())

    for _ in range(2):  # and again: the refusal released the exporter lock
        with pytest.raises(csvjournal.JournalCorruptError) as caught:
            if export:
                csvjournal.open(csv_path, keep_backups=3)
            else:
                with csvjournal.open(csv_path, export=False) as journal:
                    journal.recover()
        error = caught.value
        assert isinstance(error, RuntimeError)
        assert isinstance(error, csvjournal.CsvJournalError)
        message = str(error)
        assert str(journal_path) in message
        assert str(good) in message, message  # the newest backup, and a sound one
        assert f"csvjournal restore {csv_path} {good}" in message
        # a damaged journal is not backed up: its copy would push sound backups out
        assert sorted(p.name for p in Path(f"{csv_path}.backups").iterdir()) == listing

    safety = csvjournal.restore(csv_path, good, keep_backups=3)
    assert safety is not None
    with csvjournal.open(csv_path) as journal:
        assert journal.recover().integrity == "ok"
        assert len(journal) == CORRUPT_ROWS
        assert journal.get("k00001")["STATUS"] == "COMPLETED"  # type: ignore[index]


def test_a_damaged_journal_without_backups_says_so(tmp_path: Path) -> None:
    csv_path = tmp_path / "orders.csv"
    _make_journal(csv_path, CORRUPT_ROWS, keep_backups=0)
    _damage(Path(f"{csv_path}.journal"))
    with pytest.raises(csvjournal.JournalCorruptError, match=r"no backup of .* exists"):
        csvjournal.open(csv_path, keep_backups=0)


def _break_index_definition(journal_path: Path) -> None:
    """Damage that quick_check misses and integrity_check finds: rows missing from an
    index (its definition no longer matches its content)."""
    with closing(sqlite3.connect(journal_path)) as conn:
        conn.execute("PRAGMA writable_schema = ON")
        changed = conn.execute(
            "UPDATE sqlite_master SET sql = replace(sql, 'IS NOT NULL', 'IS NULL')"
            " WHERE name = 'rows_leased'"
        ).rowcount
        conn.commit()
        assert changed == 1
    with closing(sqlite3.connect(journal_path)) as conn:  # reads the schema anew
        assert conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA integrity_check").fetchall() != [("ok",)]


def test_damage_quick_check_misses_is_refused_and_the_sound_backup_named(tmp_path: Path) -> None:
    csv_path = tmp_path / "orders.csv"
    journal_path = Path(f"{csv_path}.journal")
    _make_journal(csv_path, 50)
    with csvjournal.open(csv_path) as journal:
        good = journal.backup()
    _break_index_definition(journal_path)
    before = sorted(Path(f"{csv_path}.backups").iterdir())
    # quick_check would pass this; the exporting open runs the full integrity_check and
    # refuses the journal before its session backup could push a sound backup out
    with pytest.raises(csvjournal.JournalCorruptError) as caught:
        csvjournal.open(csv_path)
    assert sorted(Path(f"{csv_path}.backups").iterdir()) == before
    with csvjournal.open(csv_path, export=False) as journal:  # no check without a session
        damaged = journal.backup()  # a copy of the damage
        with pytest.raises(csvjournal.JournalCorruptError) as caught:
            journal.recover()
    message = str(caught.value)
    assert "integrity_check" in message
    assert "missing from index rows_leased" in message
    assert f"csvjournal restore {csv_path} {good}" in message
    assert str(damaged) not in message
    with pytest.raises(csvjournal.JournalCorruptError):
        csvjournal.restore(csv_path, damaged)
    csvjournal.restore(csv_path, good)
    with csvjournal.open(csv_path) as journal:
        assert journal.recover().integrity == "ok"
        assert len(journal) == 50
