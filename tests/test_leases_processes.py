"""Many claimers at once: worker processes and threads claim the rows of one journal."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from itertools import pairwise
from pathlib import Path

import pytest
from _jobs import open_journal as _open
from _jobs import write_csv as _write_csv
from _leases import CLOCK_SLACK, LONG
from _leases import claims as _claims
from _leases import csv_statuses as _csv_statuses
from _leases import wait_for as _wait_for

from csvjournal import Journal

# The slow tests run real worker processes (a script written into ``tmp_path``) that claim
# rows one at a time from one journal; some are killed with SIGKILL while they hold rows.
# Every claim is proven from the audit trail: ``history()`` must show each row claimed
# exactly once while its lease lived, and every reclaim after the lost lease ran out,
# naming the lost worker.

ROWS = 5000
PROCESSES = 4
THREADS = 2
START_TIMEOUT = 60.0  # seconds a worker may take to start and open the journal
RUN_TIMEOUT = 120.0  # seconds the workers may take for the whole job

# Claims rows one at a time in THREADS threads until none is left to do, recording each
# COMPLETED. Each thread reports "claimed KEY" and "done KEY" lines (unbuffered, after the
# call returned) into its own file; stdout is not used. With hang_after >= 0, thread t0
# stops after that many rows while holding its next row (reports "holding KEY") and waits
# to be killed. mode "claim" is a plain claim loop that waits while rows are leased by
# others; mode "work" is journal.work().
CLAIM_WORKER = """\
import os
import random
import sys
import threading
import time
from pathlib import Path

import structlog

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
import csvjournal

csv_path, out = sys.argv[1], Path(sys.argv[2])
mode, lease, hang_after = sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
threads = int(sys.argv[6])
journal = csvjournal.open(csv_path, export=False, durability="normal")
journal.pending()  # attached before the start
(out / f"ready-{os.getpid()}").touch()
while not (out / "go").exists():
    time.sleep(0.005)


def handle(name, key, done, report):
    report.write(f"claimed {key}\\n".encode())
    if name == "t0" and done == hang_after:
        report.write(f"holding {key}\\n".encode())
        time.sleep(3600)
    time.sleep(random.uniform(0, 0.004))  # the work


def claim_loop(name, report):
    done = 0
    while True:
        keys = journal.claim(1, lease=lease)
        if not keys:
            end = journal.next_lease_end()
            if end is None:
                keys = journal.claim(1, lease=lease)  # a lease may have ended meanwhile
                if not keys:
                    return
            else:
                time.sleep(min(0.05, max(0.0, end - time.time())))
                continue
        handle(name, keys[0], done, report)
        journal.record(keys[0], "COMPLETED")
        report.write(f"done {keys[0]}\\n".encode())
        done += 1


def work_loop(name, report):
    for done, task in enumerate(journal.work(lease=lease, max_attempts=None)):
        with task:
            handle(name, task.key, done, report)
            task.record("COMPLETED")
        report.write(f"done {task.key}\\n".encode())


def run(name):
    with open(out / f"report-{os.getpid()}-{name}.txt", "wb", buffering=0) as report:
        (claim_loop if mode == "claim" else work_loop)(name, report)


workers = [threading.Thread(target=run, args=(f"t{i}",), name=f"t{i}") for i in range(threads)]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
journal.close()
"""


def _row_keys(count: int) -> list[str]:
    return [f"R{n:05d}" for n in range(count)]


def _lines(path: Path) -> list[str]:
    """The complete lines of a report; a last line without its newline is ignored."""
    return [line.decode() for line in path.read_bytes().split(b"\n")[:-1]] if path.exists() else []


class _Workers:
    """PROCESSES claim-worker processes on one journal, started together through a gate."""

    def __init__(self, tmp_path: Path, csv_path: Path, mode: str, lease: float) -> None:
        self.out = tmp_path / "out"
        self.out.mkdir()
        script = tmp_path / "claim_worker.py"
        script.write_text(CLAIM_WORKER)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self.script, self.csv_path, self.mode, self.lease = script, csv_path, mode, lease

    def start(self, hang_after: list[int]) -> None:
        for n, hang in enumerate(hang_after):
            log = self.out / f"stderr-{n}.txt"
            self.logs.append(log)
            with log.open("wb") as stderr:
                args = [self.csv_path, self.out, self.mode, self.lease, hang, THREADS]
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, str(self.script), *map(str, args)],
                        stdout=subprocess.DEVNULL,
                        stderr=stderr,
                    )
                )
        ready = [self.out / f"ready-{proc.pid}" for proc in self.procs]
        _wait_for(
            "the workers to start",
            lambda: self.alive() and all(map(Path.exists, ready)),
            START_TIMEOUT,
        )
        (self.out / "go").touch()

    def alive(self) -> bool:
        for proc, log in zip(self.procs, self.logs, strict=True):
            assert proc.poll() is None, (
                f"worker ended early ({proc.returncode}):\n{log.read_text()}"
            )
        return True

    def reports(self, pid: int) -> dict[str, list[str]]:
        """{worker name: report lines} of the threads of process ``pid``."""
        host = socket.gethostname()
        return {
            f"{host}:{pid}:t{t}": _lines(self.out / f"report-{pid}-t{t}.txt")
            for t in range(THREADS)
        }

    def wait(self) -> dict[int, int]:
        """Wait for every worker to end; return {pid: returncode}."""
        deadline = time.monotonic() + RUN_TIMEOUT
        for proc in self.procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        return {proc.pid: proc.returncode for proc in self.procs}

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def log_text(self) -> str:
        return "\n".join(log.read_text() for log in self.logs)


@pytest.fixture
def rows_csv(tmp_path: Path) -> Path:
    path = tmp_path / "rows.csv"
    _write_csv(path, _row_keys(ROWS))
    return path


def _worker_pid(worker: str) -> int:
    return int(worker.rsplit(":", 2)[1])


@pytest.mark.slow
def test_processes_and_threads_claim_every_row_exactly_once(tmp_path: Path, rows_csv: Path) -> None:
    keys = _row_keys(ROWS)
    with _open(rows_csv) as journal:
        workers = _Workers(tmp_path, rows_csv, "claim", LONG)
        try:
            workers.start([-1] * PROCESSES)
            codes = workers.wait()
        finally:
            workers.stop()
        assert set(codes.values()) == {0}, workers.log_text()

        assert journal.counts() == {"COMPLETED": ROWS}
        assert journal.pending() == []
        assert set(_csv_statuses(journal).values()) == {"COMPLETED"}

        completed_by: dict[str, str] = {}
        problems: list[str] = []
        for key in keys:
            events = journal.history(key)
            shape = [(e.status, e.note) for e in events]
            if shape != [("IN_PROGRESS", None), ("COMPLETED", None)]:
                problems.append(f"{key}: {shape}")
            elif events[0].worker != events[1].worker:
                problems.append(f"{key}: claimed by {events[0].worker}, done by {events[1].worker}")
            else:
                completed_by[key] = events[1].worker
        assert problems[:20] == []

        # The workers' own reports agree with the journal: each key claimed once, by the
        # worker the journal names; and every process took part.
        reported: dict[str, str] = {}
        for pid in codes:
            for worker, lines in workers.reports(pid).items():
                claimed = [line.split()[1] for line in lines if line.startswith("claimed ")]
                done = [line.split()[1] for line in lines if line.startswith("done ")]
                assert claimed == done, worker
                for key in claimed:
                    assert key not in reported, f"{key} claimed by {worker} and {reported[key]}"
                    reported[key] = worker
        assert reported == completed_by
        assert {_worker_pid(w) for w in reported.values()} == set(codes)


def _check_reclaims(journal: Journal, keys: list[str], killed: set[int], lease: float) -> set[str]:
    """Every row COMPLETED once, by its last claimer; every earlier claim was lost by a
    killed worker and taken over only after its lease ran out. Return the reclaimed keys."""
    reclaimed: set[str] = set()
    problems: list[str] = []
    with closing(sqlite3.connect(journal.journal_path)) as conn:
        events: dict[str, list[tuple[str, str, str | None]]] = {}
        for key, status, worker, note in conn.execute(
            "SELECT key, status, worker, note FROM events ORDER BY seq"
        ):
            events.setdefault(key, []).append((status, worker, note))
    for key in keys:
        trail = events.get(key, [])
        statuses = [status for status, _, _ in trail]
        claims = statuses.count("IN_PROGRESS")
        if claims == 0 or statuses != ["IN_PROGRESS"] * claims + ["COMPLETED"]:
            problems.append(f"{key}: {trail}")
        elif trail[-1][1] != trail[-2][1]:
            problems.append(f"{key}: done by {trail[-1][1]}, last claimed by {trail[-2][1]}")
        elif claims > 1:
            reclaimed.add(key)
    assert problems[:20] == []

    for key in sorted(reclaimed):  # through the API, with times
        claims = _claims(journal.history(key))
        assert claims[0].note is None
        for lost, taker in pairwise(claims):
            assert _worker_pid(lost.worker) in killed, f"{key}: {lost.worker} lost it alive"
            assert taker.note == f"lease of {lost.worker} expired", key
            waited = (taker.at - lost.at).total_seconds()
            assert waited >= lease - CLOCK_SLACK, f"{key}: taken over after {waited} s"
    return reclaimed


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["claim", "work"])
def test_rows_of_killed_workers_are_reclaimed_after_their_leases_ran_out(
    tmp_path: Path, rows_csv: Path, mode: str
) -> None:
    lease = 2.0
    keys = _row_keys(ROWS)
    doomed_hang_after = 25
    with _open(rows_csv) as journal:
        workers = _Workers(tmp_path, rows_csv, mode, lease)
        try:
            workers.start([doomed_hang_after, -1, doomed_hang_after, -1])
            doomed = [workers.procs[0], workers.procs[2]]
            holding: dict[int, str] = {}

            def both_holding() -> bool:
                for proc in doomed:
                    for line in _lines(workers.out / f"report-{proc.pid}-t0.txt"):
                        if line.startswith("holding "):
                            holding[proc.pid] = line.split()[1]
                return len(holding) == len(doomed) and workers.alive()

            _wait_for("both doomed workers to hold a row", both_holding, START_TIMEOUT)
            if mode == "work":
                # Held well past its lease: journal.work() renews it while the process lives.
                time.sleep(2 * lease)
            killed_at = time.time()
            for proc in doomed:
                os.kill(proc.pid, signal.SIGKILL)
            done_at_kill = journal.counts().get("COMPLETED", 0)
            codes = workers.wait()
        finally:
            workers.stop()
        killed = {proc.pid for proc in doomed}
        assert {pid: code for pid, code in codes.items() if pid in killed} == dict.fromkeys(
            killed, -signal.SIGKILL
        )
        assert {pid: code for pid, code in codes.items() if pid not in killed} == {
            pid: 0 for pid in codes if pid not in killed
        }, workers.log_text()
        assert done_at_kill < ROWS, "the kills came after the job was done"

        assert journal.counts() == {"COMPLETED": ROWS}
        assert journal.pending() == []
        assert set(_csv_statuses(journal).values()) == {"COMPLETED"}
        reclaimed = _check_reclaims(journal, keys, killed, lease)
        assert set(holding.values()) <= reclaimed
        for key in holding.values():
            taker = _claims(journal.history(key))[-1]
            assert _worker_pid(taker.worker) not in killed
            if mode == "work":  # renewed until the kill: not taken over before it
                assert taker.at.timestamp() >= killed_at - CLOCK_SLACK, key
