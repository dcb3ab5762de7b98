"""Workers whose exporting process died: their non-exporting handles write the CSV.

Real processes: an exporting process killed with kill -9 while a worker process (a
non-exporting handle, as a worker passed the journal reopens it) goes on recording.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from _children import script as _script
from _children import wait_for_line as _wait_for_line

import csvjournal

pytestmark = pytest.mark.slow

ROWS = 40
CATCH_UP_SECONDS = 10.0  # an orphan round every second; a loaded machine takes longer

# Holds the exporter until killed.
EXPORTER = """\
journal = csvjournal.open(sys.argv[1])
with open(sys.argv[2], "a", buffering=1) as report:
    report.write("exporting\\n")
    time.sleep(600)
"""

# Records the first half, waits for "go", records the rest, then stays open (no close).
WORKER = """\
journal = csvjournal.open(sys.argv[1], export=False)
rows = int(sys.argv[3])
with open(sys.argv[2], "a", buffering=1) as report:
    for n in range(rows // 2):
        journal.record(f"r{n}", "COMPLETED")
    report.write("half\\n")
    while not Path(sys.argv[4]).exists():
        time.sleep(0.01)
    for n in range(rows // 2, rows):
        journal.record(f"r{n}", "COMPLETED")
        time.sleep(0.02)
    report.write("done\\n")
    time.sleep(600)
"""


def _statuses(csv_path: Path) -> dict[str, str]:
    with csv_path.open(newline="") as f:
        return {row["ID"]: row["STATUS"] for row in csv.DictReader(f)}


@contextmanager
def _child(tmp_path: Path, name: str, body: str, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    with (tmp_path / f"{name}.log").open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(_script(tmp_path, name, body)), *args],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_workers_write_the_csv_once_the_exporting_process_died(tmp_path: Path) -> None:
    csv_path = tmp_path / "jobs.csv"
    csv_path.write_text("ID\n" + "".join(f"r{n}\n" for n in range(ROWS)))
    csvjournal.open(csv_path, key="ID").close()
    go, said, told = tmp_path / "go", tmp_path / "exporter.report", tmp_path / "worker.report"
    args = [str(csv_path), str(told), str(ROWS), str(go)]
    with (
        _child(tmp_path, "exporter", EXPORTER, str(csv_path), str(said)) as exporter,
        _child(tmp_path, "worker", WORKER, *args) as worker,
    ):
        _wait_for_line(exporter, said, "exporting", tmp_path / "exporter.log")
        _wait_for_line(worker, told, "half", tmp_path / "worker.log")
        os.kill(exporter.pid, signal.SIGKILL)  # the exporting process dies mid-job
        exporter.wait()
        go.touch()
        _wait_for_line(worker, told, "done", tmp_path / "worker.log")
        deadline = time.monotonic() + CATCH_UP_SECONDS
        while set(_statuses(csv_path).values()) != {"COMPLETED"}:
            assert time.monotonic() < deadline, (
                f"the CSV did not catch up: {_statuses(csv_path)}\n"
                + (tmp_path / "worker.log").read_text()
            )
            time.sleep(0.1)
        assert worker.poll() is None  # written while the worker still runs, not at its exit
    with csvjournal.open(csv_path) as journal:  # a CSV csvjournal wrote: no hand edit
        assert journal.counts() == {"COMPLETED": ROWS}


def test_a_worker_closing_with_no_exporter_alive_writes_its_last_records(tmp_path: Path) -> None:
    csv_path = tmp_path / "jobs.csv"
    csvjournal.open(csv_path, key="ID").close()
    with csvjournal.open(csv_path, export=False) as journal:
        for n in range(3):
            journal.record(f"r{n}", "COMPLETED")
    assert _statuses(csv_path) == dict.fromkeys(["r0", "r1", "r2"], "COMPLETED")
