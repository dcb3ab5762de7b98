"""kill -9 of a recording process: every ``record()`` that returned survives, a batch that
did not finish leaves nothing behind, and the journal stays a sound SQLite database.

The workers are real subprocesses running a script written into ``tmp_path``. They report
what they recorded in a file of their own (unbuffered, one line per record, written only
after ``record()`` returned); their stdout is not used, as the library may log there.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from _children import lines as _lines
from _children import wait_for_line as _wait_for_line

import csvjournal

pytestmark = pytest.mark.slow

KEY = "ID"
KILLS = 20
SEED = 20261128
API_LAST = 50  # the last keys reported before each kill are read back through the API,
API_SAMPLE = 100  # and this many random keys of all reported (all are checked with SQL)

# Records k-<n> from n = len(journal) on, until killed. Each line of the report is
# "<key> <seq> <status>\n", written in one unbuffered write after record() returned.
LOOP_WORKER = """\
import sys

import csvjournal

STATUSES = ("COMPLETED", "FAILED", "NO_ATTACHMENTS")

csv_path, report_path = sys.argv[1:3]
journal = csvjournal.open(csv_path, key="ID", durability="full")
n = len(journal)
with open(report_path, "wb", buffering=0) as report:
    report.write(b"ready\\n")
    while True:
        key, status = f"k-{n}", STATUSES[n % len(STATUSES)]
        seq = journal.record(key, status, fields={"N": n})
        report.write(f"{key} {seq} {status}\\n".encode())
        n += 1
"""

PRE_BATCH = 10
BATCH_SIZE = 5000

# Records pre-<n> one by one (reported), then opens a batch and records b-<n> in it with a
# column nothing else uses. "after-records": BATCH_SIZE records (read back, so they are
# written into the open transaction), report "inside", then wait inside the block.
# "while-recording": report "inside", then keep recording in the block until killed.
BATCH_WORKER = f"""\
import itertools
import sys
import time

import csvjournal

csv_path, report_path, mode = sys.argv[1:4]
journal = csvjournal.open(csv_path, key="ID", durability="full")
with open(report_path, "wb", buffering=0) as report:
    for n in range({PRE_BATCH}):
        seq = journal.record(f"pre-{{n}}", "COMPLETED", fields={{"N": n}})
        report.write(f"pre-{{n}} {{seq}} COMPLETED\\n".encode())
    with journal.batch():
        if mode == "after-records":
            for n in range({BATCH_SIZE}):
                journal.record(f"b-{{n}}", "COMPLETED", fields={{"N": n, "BATCH_ONLY": "x"}})
            assert journal.get(f"b-{BATCH_SIZE - 1}") is not None
            report.write(b"inside\\n")
            time.sleep(600)
        else:
            report.write(b"inside\\n")
            for n in itertools.count():
                journal.record(f"b-{{n}}", "COMPLETED", fields={{"N": n, "BATCH_ONLY": "x"}})
"""


# -- helpers -----------------------------------------------------------------------------


def _start(script: Path, *args: object, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, str(script), *map(str, args)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def _kill(proc: subprocess.Popen[bytes], log: Path) -> None:
    """SIGKILL the worker, which must still be running."""
    assert proc.poll() is None, f"worker ended early ({proc.returncode}):\n{log.read_text()}"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _integrity(journal_path: Path) -> str:
    with closing(sqlite3.connect(journal_path)) as conn:
        return "\n".join(row[0] for row in conn.execute("PRAGMA integrity_check"))


def _snapshot(journal_path: Path) -> tuple[dict[str, str], dict[str, list[tuple[int, str]]]]:
    """Straight from SQLite: {key: status} of the rows, {key: [(seq, status), ...]} of the
    events."""
    with closing(sqlite3.connect(journal_path)) as conn:
        rows = dict(conn.execute("SELECT key, status FROM rows"))
        events: dict[str, list[tuple[int, str]]] = {}
        for seq, key, status in conn.execute("SELECT seq, key, status FROM events ORDER BY seq"):
            events.setdefault(key, []).append((seq, status))
    return rows, events


def _check_via_api(journal: csvjournal.Journal, key: str, seq: int, status: str) -> list[str]:
    problems = []
    row = journal.get(key)
    if row is None or row["STATUS"] != status or row["N"] != key.split("-")[1]:
        problems.append(f"get({key!r}) == {row}, recorded {status} as seq {seq}")
    history = journal.history(key)
    if [(e.seq, e.status, dict(e.fields)) for e in history] != [
        (seq, status, {"N": key.split("-")[1]})
    ]:
        problems.append(f"history({key!r}) == {history}, recorded {status} as seq {seq}")
    return problems


# -- tests -------------------------------------------------------------------------------


def test_kill_9_loses_no_returned_record(tmp_path: Path) -> None:
    script = tmp_path / "loop_worker.py"
    script.write_text(LOOP_WORKER)
    csv_path = tmp_path / "orders.csv"
    journal_path = Path(f"{csv_path}.journal")
    rng = random.Random(SEED)
    reported: dict[str, tuple[int, str]] = {}  # key -> (seq, status), over all workers
    rows_before = 0

    for kill in range(KILLS):
        report = tmp_path / f"report-{kill}.txt"
        log = tmp_path / f"stderr-{kill}.txt"
        proc = _start(script, csv_path, report, log=log)
        try:
            _wait_for_line(proc, report, "ready", log)
            time.sleep(rng.uniform(0.1, 0.5))
            _kill(proc, log)
        finally:
            _stop(proc)

        lines = _lines(report)
        assert lines[0] == "ready"
        new = {key: (int(seq), status) for key, seq, status in map(str.split, lines[1:])}
        # The worker went on from len(journal): its keys are the next ones, in order.
        assert list(new) == [f"k-{n}" for n in range(rows_before, rows_before + len(new))]
        reported.update(new)

        assert _integrity(journal_path) == "ok", f"after kill {kill}"
        rows, events = _snapshot(journal_path)
        lost = {
            key: (rows.get(key), events.get(key))
            for key, (seq, status) in reported.items()
            if rows.get(key) != status or events.get(key) != [(seq, status)]
        }
        assert lost == {}, f"after kill {kill}"
        # Nothing else: at most the one record whose commit beat the kill but not its report.
        assert set(rows) == set(events) == {f"k-{n}" for n in range(len(rows))}
        assert len(rows) - rows_before - len(new) in {0, 1}, f"after kill {kill}"
        assert all(len(trail) == 1 for trail in events.values())
        rows_before = len(rows)

        # Through the API: the last keys this worker reported (the ones nearest the kill) and
        # a random sample of all (get() and history() cost about a millisecond each, and
        # there are thousands of keys; the SQL check above covered every one of them).
        checked = list(new)[-API_LAST:]
        checked += rng.sample(sorted(reported), min(API_SAMPLE, len(reported)))
        with csvjournal.open(csv_path, key=KEY) as journal:
            problems = [p for key in checked for p in _check_via_api(journal, key, *reported[key])]
            assert problems[:20] == [], f"after kill {kill}"
            assert len(journal) == rows_before

    assert len(reported) >= KILLS, "the workers hardly recorded anything before being killed"


@pytest.mark.parametrize("mode", ["after-records", "while-recording"])
def test_kill_9_inside_batch_leaves_no_trace(tmp_path: Path, mode: str) -> None:
    script = tmp_path / "batch_worker.py"
    script.write_text(BATCH_WORKER)
    csv_path = tmp_path / "orders.csv"
    journal_path = Path(f"{csv_path}.journal")
    report = tmp_path / "report.txt"
    log = tmp_path / "stderr.txt"

    proc = _start(script, csv_path, report, mode, log=log)
    try:
        _wait_for_line(proc, report, "inside", log)
        if mode == "while-recording":
            time.sleep(random.Random(SEED).uniform(0.1, 0.5))
        _kill(proc, log)
    finally:
        _stop(proc)

    pre = {
        key: (int(seq), status)
        for key, seq, status in (line.split() for line in _lines(report) if line != "inside")
    }
    assert list(pre) == [f"pre-{n}" for n in range(PRE_BATCH)]

    assert _integrity(journal_path) == "ok"
    rows, events = _snapshot(journal_path)
    assert rows == {key: status for key, (_, status) in pre.items()}
    assert events == {key: [seq_status] for key, seq_status in pre.items()}
    with closing(sqlite3.connect(journal_path)) as conn:
        columns = [name for (name,) in conn.execute("SELECT name FROM columns ORDER BY pos")]
    assert columns == [KEY, "STATUS", "LAST_PROCESSED", "N"]

    with csvjournal.open(csv_path, key=KEY) as journal:
        assert len(journal) == PRE_BATCH
        assert journal.columns == [KEY, "STATUS", "LAST_PROCESSED", "N"]
        for n in (0, 1, BATCH_SIZE // 2, BATCH_SIZE - 1):
            assert journal.get(f"b-{n}") is None
            assert journal.history(f"b-{n}") == []
        for key, (seq, status) in pre.items():
            assert [(e.seq, e.status) for e in journal.history(key)] == [(seq, status)]
            assert journal.get(key) is not None
        # The journal takes new records after the crash, numbered after the survivors.
        seq = journal.record("after", "COMPLETED")
        assert seq > max(seq for seq, _ in pre.values())
        assert journal.get("after") is not None
    assert _integrity(journal_path) == "ok"


CREATE = """\
import sys

import csvjournal

print("started", flush=True)
csvjournal.open(sys.argv[1], key="ID", export=False).close()
"""


def test_kill_9_while_a_journal_is_created_never_blocks_the_job(tmp_path: Path) -> None:
    """Killed at any moment of its creation, the journal is either whole or known as
    unfinished: an open without ``key=`` says so (not a CSV error), and an open with it
    imports the CSV anew, every row once."""
    script = tmp_path / "create.py"
    script.write_text(CREATE)
    rows = 5000
    outcomes = set()
    for attempt in range(12):
        csv_path = tmp_path / f"jobs-{attempt}.csv"
        csv_path.write_text("ID,NAME\n" + "".join(f"{n},n{n}\n" for n in range(rows)))
        child = subprocess.Popen(
            [sys.executable, str(script), str(csv_path)], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None
        assert child.stdout.readline() == "started\n"  # imports done: the open begins
        time.sleep(attempt * 0.02)  # a different moment of the creation each time
        child.kill()
        child.wait()
        try:
            with csvjournal.open(csv_path, export=False) as journal:
                outcomes.add("whole")
                assert len(journal) == rows
        except csvjournal.SettingsError as exc:
            text = str(exc)
            if "creation is not finished" in text:
                outcomes.add("unfinished")
            elif "no journal here yet" in text:
                outcomes.add("not begun")
            else:
                outcomes.add(text)
        with csvjournal.open(csv_path, key="ID") as journal:  # the job goes on
            assert len(journal) == rows
            assert journal.pending()[:2] == ["0", "1"]
    assert outcomes <= {"not begun", "unfinished", "whole"}, outcomes


_RACING_CREATOR = """
import sys
import csvjournal
try:
    with csvjournal.open(sys.argv[1], key="ID", busy_timeout=0.05) as journal:
        print("opened", len(journal))
except csvjournal.JournalBusyError:
    print("busy")
"""


@pytest.mark.slow
def test_creators_that_lose_the_race_leave_the_winners_journal_alone(tmp_path: Path) -> None:
    # Four processes create the same journal at once, with a busy timeout shorter than
    # the import: the losers give up, and must not remove the journal being imported.
    csv_path = tmp_path / "orders.csv"
    rows = 100_000
    csv_path.write_text("ID,NAME\n" + "".join(f"r{i},name {i}\n" for i in range(rows)))
    script = tmp_path / "creator.py"
    script.write_text(_RACING_CREATOR)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(csv_path)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    outcomes = [proc.communicate(timeout=300)[0].splitlines()[-1] for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), outcomes
    assert all(o in ("busy", f"opened {rows}") for o in outcomes), outcomes
    assert f"opened {rows}" in outcomes
    with csvjournal.open(csv_path, export=False) as journal:
        assert len(journal) == rows
