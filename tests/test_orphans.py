"""Workers whose exporting process died: their handles write the CSV.

Real processes: a parent that opened the journal (the exporter) and passed it to worker
processes (spawn), killed with kill -9 while the workers go on recording.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _children import lines as _lines
from _children import script as _script
from _children import wait_for_line as _wait_for_line

import csvjournal

pytestmark = pytest.mark.slow

ROWS = 40
CATCH_UP_SECONDS = 20.0  # an orphan round each second; a loaded machine takes longer

# The parent: exports, and starts one worker process that it passes the journal to.
# The worker records half the rows, waits for the "go" file, records the rest and stays.
PARENT_OF_ONE = """\
import multiprocessing


def work(journal, report_path, go, rows):
    with open(report_path, "a", buffering=1) as report:
        for n in range(rows // 2):
            journal.record(f"r{n}", "COMPLETED")
        report.write("half\\n")
        while not os.path.exists(go):
            time.sleep(0.01)
        for n in range(rows // 2, rows):
            journal.record(f"r{n}", "COMPLETED")
            time.sleep(0.02)
        report.write("done\\n")
        time.sleep(600)


if __name__ == "__main__":
    csv_path, report_path, go, rows = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    journal = csvjournal.open(csv_path)
    spawn = multiprocessing.get_context("spawn")
    worker = spawn.Process(target=work, args=(journal, report_path, go, rows))
    worker.start()
    with open(report_path, "a", buffering=1) as report:
        report.write(f"worker {worker.pid}\\n")
    time.sleep(600)
"""

# The parent: exports, and maps a task per row over a pool of two spawned workers; each
# task records its row (the pid first) and takes a while.
PARENT_OF_A_POOL = """\
import multiprocessing


def task(args):
    journal, key, report_path = args
    journal.record(key, "COMPLETED", PID=os.getpid())
    with open(report_path, "a", buffering=1) as report:
        report.write(f"recorded {key} {os.getpid()}\\n")
    time.sleep(0.2)


if __name__ == "__main__":
    csv_path, report_path, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
    journal = csvjournal.open(csv_path)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(task, [(journal, f"r{n}", report_path) for n in range(rows)], chunksize=1)
"""


def _statuses(csv_path: Path) -> dict[str, str]:
    with csv_path.open(newline="") as f:
        return {row["ID"]: row["STATUS"] for row in csv.DictReader(f)}


def _jobs_csv(tmp_path: Path) -> Path:
    csv_path = tmp_path / "jobs.csv"
    csv_path.write_text("ID\n" + "".join(f"r{n}\n" for n in range(ROWS)))
    csvjournal.open(csv_path, key="ID").close()
    return csv_path


def _start(tmp_path: Path, name: str, body: str, *args: str) -> subprocess.Popen[bytes]:
    with (tmp_path / f"{name}.log").open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, str(_script(tmp_path, name, body)), *args],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not: it waits to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_worker_writes_the_csv_once_its_exporting_parent_died(tmp_path: Path) -> None:
    csv_path = _jobs_csv(tmp_path)
    report, go = tmp_path / "report", tmp_path / "go"
    args = [str(csv_path), str(report), str(go), str(ROWS)]
    parent = _start(tmp_path, "parent", PARENT_OF_ONE, *args)
    worker_pid = None
    try:
        _wait_for_line(parent, report, "half", tmp_path / "parent.log")
        worker_pid = int(next(line for line in _lines(report) if line.startswith("worker"))[7:])
        os.kill(parent.pid, signal.SIGKILL)  # the exporting process dies mid-job
        parent.wait()
        go.touch()
        deadline = time.monotonic() + CATCH_UP_SECONDS
        while "done" not in _lines(report) or set(_statuses(csv_path).values()) != {"COMPLETED"}:
            assert time.monotonic() < deadline, f"the CSV did not catch up: {_statuses(csv_path)}"
            assert _alive(worker_pid), (tmp_path / "parent.log").read_text()
            time.sleep(0.1)
        assert _alive(worker_pid)  # written while the worker still runs, not at its exit
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.wait()
        if worker_pid is not None and _alive(worker_pid):
            os.kill(worker_pid, signal.SIGKILL)
    with csvjournal.open(csv_path) as journal:  # a CSV csvjournal wrote: no hand edit
        assert journal.counts() == {"COMPLETED": ROWS}


def test_pool_workers_write_their_last_records_as_they_exit_after_the_parent_died(
    tmp_path: Path,
) -> None:
    # A pool worker ends with os._exit (no atexit), well within the second an orphan
    # round waits: its records reach the CSV as it exits (a multiprocessing finalizer).
    csv_path = _jobs_csv(tmp_path)
    report = tmp_path / "report"
    parent = _start(tmp_path, "parent", PARENT_OF_A_POOL, str(csv_path), str(report), str(ROWS))
    try:
        deadline = time.monotonic() + 60
        while len(_lines(report)) < 6:
            assert parent.poll() is None, (tmp_path / "parent.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        pids = {int(line.split()[2]) for line in _lines(report)}
        deadline = time.monotonic() + CATCH_UP_SECONDS
        while any(_alive(pid) for pid in pids):
            assert time.monotonic() < deadline, "the pool's workers did not end"
            time.sleep(0.05)
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.wait()
    with csvjournal.open(csv_path, export=False) as journal:
        rows = journal.to_dataframe()
    recorded = set(rows[rows["STATUS"] == "COMPLETED"]["ID"])
    shown = {key for key, status in _statuses(csv_path).items() if status == "COMPLETED"}
    assert len(recorded) >= 6
    assert shown == recorded


def test_a_programs_own_non_exporting_handle_leaves_the_csv_to_flush(tmp_path: Path) -> None:
    csv_path = tmp_path / "jobs.csv"
    csvjournal.open(csv_path, key="ID").close()
    with csvjournal.open(csv_path, export=False) as journal:
        journal.record("r0", "COMPLETED")
        time.sleep(1.5)  # an orphan round's wait, and more
        assert "r0" not in _statuses(csv_path)  # export=False: the program's choice
        journal.flush(timeout=30)  # nobody exports: flush does
    assert _statuses(csv_path) == {"r0": "COMPLETED"}
