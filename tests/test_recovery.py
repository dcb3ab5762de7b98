"""Recovery after a crash: a whole job killed with kill -9 resumes with exactly its unfinished
rows, and the expired leases of killed workers go back to PENDING, naming the lost worker.

Child processes are real Python processes running scripts written into ``tmp_path``; they
log to stderr (structlog prints to stdout by default) and report on files of their own,
one unbuffered line at a time, written only after the call they report returned.
"""

from __future__ import annotations

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
from _children import READY_TIMEOUT
from _children import lines as _lines
from _children import script as _script
from _recovery import csv_rows as _csv_rows
from _recovery import csv_status as _csv_status

import csvjournal

# -- helpers -----------------------------------------------------------------------------


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


def _write_input(path: Path, keys: list[str]) -> None:
    path.write_text("ID,NAME\n" + "".join(f"{key},name of {key}\n" for key in keys))


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
    shown = _csv_rows(csv_path)
    assert len(shown) == ITEMS  # whatever it shows, the CSV is whole
    behind = sum(row.get("STATUS") == "COMPLETED" for row in shown) < KILL_AT

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
        assert report_after.csv_was_stale is behind  # as the open found it, and wrote it


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
        # the open did it already: its report says so, once
        assert {key for key, _ in journal.recover().expired} == set(lost)
        assert journal.recover().expired == ()


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
