"""``Journal.work()`` and leases: renewal, rows other workers hold, threads, a stopped worker."""

from __future__ import annotations

import csv
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import _work
import pytest
from _jobs import KEY
from _jobs import open_journal as _open
from _jobs import write_csv as _write_csv
from _work import KEYS, LONG, WAIT
from _work import finish_all_but_first as _finish_all_but_first
from _work import me as _me
from _work import trail as _trail
from _work import wait_for as _wait_for

import csvjournal
from csvjournal import Journal
from csvjournal.events import Event

CLOCK_SLACK = 0.05  # event times are truncated to the millisecond

# The fixtures of the five-row CSV and its exporting journal (assigned, not imported by name,
# so that the test parameters naming them do not shadow an import).
csv_path = _work.csv_path
jr = _work.jr


def _claims(events: list[Event]) -> list[Event]:
    return [e for e in events if e.status == "IN_PROGRESS"]


# -- leases: renewal, waiting for others ------------------------------------------------------


def test_the_lease_is_renewed_while_a_long_body_runs(csv_path: Path, jr: Journal) -> None:
    lease = 1.5
    _finish_all_but_first(jr)
    stolen: list[str] = []
    seen_pending: list[list[str]] = []
    stop = threading.Event()

    def thief() -> None:
        with _open(csv_path, export=False) as other:
            while not stop.is_set():
                stolen.extend(other.claim(1, lease=LONG, worker="thief"))
                seen_pending.append(other.pending())
                time.sleep(0.05)

    thread = threading.Thread(target=thief)
    tasks = []
    started = time.monotonic()
    for task in jr.work(lease=lease):
        tasks.append(task)
        with task:
            thread.start()
            time.sleep(3 * lease)  # the body outlives its lease three times over
    stop.set()
    thread.join(WAIT)
    assert time.monotonic() - started >= 3 * lease
    assert [(t.key, t.lost) for t in tasks] == [(KEYS[0], False)]
    assert stolen == []
    assert len(seen_pending) > 10
    assert all(pending == [] for pending in seen_pending)
    assert _trail(jr, KEYS[0]) == [("IN_PROGRESS", None), ("COMPLETED", None)]


def test_the_loop_waits_for_rows_leased_by_others_and_takes_over_lost_ones(jr: Journal) -> None:
    lease = 1.0
    assert jr.claim(1, lease=lease, worker="ghost") == KEYS[:1]
    seen = [task.key for task in jr.work(lease=LONG)]
    assert seen[0] == KEYS[1]  # not the leased row first
    assert sorted(seen) == sorted(KEYS)  # then, once its lease ran out, that one too
    lost, taker = _claims(jr.history(KEYS[0]))
    assert (lost.worker, taker.worker) == ("ghost", _me())
    assert taker.note == "lease of ghost expired"
    assert (taker.at - lost.at).total_seconds() >= lease - CLOCK_SLACK
    assert jr.counts() == {"COMPLETED": len(KEYS)}


def test_the_loop_ends_once_the_rows_others_hold_are_finished(csv_path: Path, jr: Journal) -> None:
    finished_at: list[float] = []

    def other_worker() -> None:
        with _open(csv_path, export=False) as other:
            assert other.claim(1, lease=LONG, worker="other") == KEYS[:1]
            claimed.set()
            time.sleep(1.0)
            other.record(KEYS[0], "COMPLETED")
            finished_at.append(time.monotonic())

    claimed = threading.Event()
    thread = threading.Thread(target=other_worker)
    thread.start()
    assert claimed.wait(WAIT)
    seen = [task.key for task in jr.work(lease=LONG)]
    ended_at = time.monotonic()
    thread.join(WAIT)
    assert seen == KEYS[1:]
    assert finished_at
    assert ended_at >= finished_at[0]  # it waited for the other worker, then ended
    claim, record = jr.history(KEYS[0])
    assert (claim.status, claim.worker, record.status) == ("IN_PROGRESS", "other", "COMPLETED")


def test_the_loop_takes_a_row_whose_lease_ran_out_while_it_waited_for_the_lock(
    jr: Journal,
) -> None:
    lease = 0.5
    _finish_all_but_first(jr)
    assert jr.claim(1, lease=lease, worker="ghost") == KEYS[:1]
    conn = sqlite3.connect(jr.journal_path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")  # the loop's first claim waits for this lock

    def unlock() -> None:
        time.sleep(lease + 1.0)
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=unlock)
    thread.start()
    seen = [task.key for task in jr.work(lease=LONG)]
    thread.join(WAIT)
    assert seen == KEYS[:1]
    assert _trail(jr, KEYS[0])[-2:] == [
        ("IN_PROGRESS", "lease of ghost expired"),
        ("COMPLETED", None),
    ]


# -- several loops at once -------------------------------------------------------------------


def test_loops_in_several_threads_share_the_rows(tmp_path: Path) -> None:
    keys = [f"T-{n:04d}" for n in range(300)]
    path = tmp_path / "many.csv"
    _write_csv(path, keys)
    seen: dict[str, list[str]] = {}
    errors: list[BaseException] = []
    with _open(path) as journal:

        def loop(name: str) -> None:
            try:
                for task in journal.work(lease=LONG, worker=name):
                    with task:
                        seen.setdefault(name, []).append(task.key)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=loop, args=(f"w{n}",)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert errors == []
        taken = [key for keys_of in seen.values() for key in keys_of]
        assert sorted(taken) == keys
        assert journal.counts() == {"COMPLETED": len(keys)}
        for name, keys_of in seen.items():
            for key in keys_of:
                assert [(e.status, e.worker) for e in journal.history(key)] == [
                    ("IN_PROGRESS", name),
                    ("COMPLETED", name),
                ]


# -- a worker stopped with SIGSTOP past its lease --------------------------------------------

# Runs journal.work() over the journal; in each task, reports "claimed KEY", waits for the
# file "go", records COMPLETED with BY=stopped and reports "recorded KEY lost=<task.lost>".
STOPPABLE_WORKER = """\
import sys
import time
from pathlib import Path

import structlog

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
import csvjournal

csv_path, out, lease = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
journal = csvjournal.open(csv_path, export=False, durability="normal")
with open(out / "report.txt", "wb", buffering=0) as report:
    for task in journal.work(lease=lease):
        with task:
            report.write(f"claimed {task.key}\\n".encode())
            while not (out / "go").exists():
                time.sleep(0.01)
            lost = task.lost
            task.record("COMPLETED", BY="stopped")
        report.write(f"recorded {task.key} lost={lost}\\n".encode())
journal.close()
"""


def _lines(path: Path) -> list[str]:
    return [line.decode() for line in path.read_bytes().split(b"\n")[:-1]] if path.exists() else []


def _state(pid: int) -> str:
    """The process state letter from /proc (T: stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.mark.slow
@pytest.mark.parametrize("first", ["stopped", "reclaimer"])
def test_a_worker_stopped_past_its_lease_loses_the_row_and_records_after_resuming(
    tmp_path: Path, csv_path: Path, jr: Journal, first: str
) -> None:
    lease = 1.5
    _finish_all_but_first(jr)
    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "stoppable_worker.py"
    script.write_text(STOPPABLE_WORKER)
    report, log = out / "report.txt", out / "stderr.txt"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(csv_path), str(out), str(lease)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:

        def running(lines: list[str]) -> Callable[[], bool]:
            def check() -> bool:
                assert proc.poll() is None, f"worker ended ({proc.returncode}):\n{log.read_text()}"
                return all(line in _lines(report) for line in lines)

            return check

        _wait_for("the worker to claim the row", running([f"claimed {KEYS[0]}"]), 60.0)
        stopped_worker = f"{socket.gethostname()}:{proc.pid}:MainThread"
        # Stop it just after a renewal (none is under way then, so it holds no lock).
        first_end = jr.next_lease_end()
        _wait_for("a renewal", lambda: jr.next_lease_end() != first_end)
        os.kill(proc.pid, signal.SIGSTOP)
        _wait_for("the worker to stop", lambda: _state(proc.pid) == "T")
        lease_end = jr.next_lease_end()
        assert lease_end is not None

        taken: list[str] = []

        def reclaimed() -> bool:
            taken.extend(jr.claim(1, lease=LONG, worker="reclaimer"))
            return bool(taken)

        _wait_for("the lease to run out", reclaimed)
        assert taken == KEYS[:1]
        assert time.time() >= lease_end
        assert _state(proc.pid) == "T"

        if first == "reclaimer":
            jr.record(KEYS[0], "COMPLETED", BY="reclaimer")
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(2.0)  # its renewer wakes and finds the row gone
        (out / "go").touch()
        _wait_for("the stopped worker to record", running([f"recorded {KEYS[0]} lost=True"]))
        if first == "stopped":
            jr.record(KEYS[0], "COMPLETED", BY="reclaimer")
        assert proc.wait(timeout=60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()

    events = jr.history(KEYS[0])
    claims = [(e.worker, e.note) for e in events if e.status == "IN_PROGRESS"]
    assert claims == [
        (stopped_worker, None),
        ("reclaimer", f"lease of {stopped_worker} expired"),
    ]
    lost_claim, taking = _claims(events)
    assert taking.at.timestamp() >= lease_end - CLOCK_SLACK
    assert (taking.at - lost_claim.at).total_seconds() >= lease - CLOCK_SLACK
    records = [(e.worker, e.fields.get("BY")) for e in events if e.status == "COMPLETED"]
    order = ["stopped", "reclaimer"] if first == "stopped" else ["reclaimer", "stopped"]
    workers = {"stopped": stopped_worker, "reclaimer": _me()}  # jr.record(): this thread
    assert records == [(workers[who], who) for who in order]
    assert [e.status for e in events] == ["IN_PROGRESS", "IN_PROGRESS", "COMPLETED", "COMPLETED"]
    row = jr.get(KEYS[0])
    assert row is not None
    assert (row["STATUS"], row["BY"]) == ("COMPLETED", order[-1])
    assert jr.pending() == []
    jr.flush(timeout=WAIT)
    with jr.csv_path.open(newline="") as f:
        assert {r[KEY]: r["STATUS"] for r in csv.DictReader(f)} == dict.fromkeys(KEYS, "COMPLETED")


@contextmanager
def _two_workers(tmp_path: Path) -> Iterator[tuple[Journal, Journal, Path]]:
    """Two non-exporting handles on a journal of one row, r0 (two workers)."""
    csv_path = tmp_path / "late.csv"
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("r0")
    first = csvjournal.open(csv_path, export=False)
    second = csvjournal.open(csv_path, export=False)
    try:
        yield first, second, csv_path
    finally:
        first.close()
        second.close()


def _lease_runs_out(csv_path: Path) -> None:
    with sqlite3.connect(f"{csv_path}.journal") as conn:
        conn.execute("UPDATE rows SET lease_until = 1 WHERE key = 'r0'")


@pytest.mark.parametrize("body_raises", [True, False], ids=["failed late", "succeeded late"])
def test_a_late_outcome_never_moves_a_row_another_worker_finished_back(
    tmp_path: Path, body_raises: bool
) -> None:
    # A worker paused past its lease (a suspended laptop, a stopped process): another took
    # the row over and finished it. A late FAILED must not undo that (the row would run
    # again); a late COMPLETED is recorded after theirs.
    with _two_workers(tmp_path) as (first, second, csv_path):
        for task in first.work(lease=300, worker="A"):
            with task:
                _lease_runs_out(csv_path)
                assert second.claim(worker="B") == ["r0"]
                second.record("r0", "COMPLETED", BY="B")
                if body_raises:
                    raise RuntimeError("A's download failed")
            assert task.finished
            assert task.lost == body_raises
            break
        trail = [(e.status, e.worker, e.fields.get("BY")) for e in first.history("r0")][1:]
        theirs = [("IN_PROGRESS", "A", None), ("IN_PROGRESS", "B", None)]
        theirs.append(("COMPLETED", trail[2][1], "B"))
        late = [] if body_raises else [("COMPLETED", "A", None)]
        assert trail == [*theirs, *late]
        assert first.get("r0")["STATUS"] == "COMPLETED"  # type: ignore[index]
        assert first.pending() == []


@pytest.mark.parametrize("body_raises", [True, False], ids=["failed late", "succeeded late"])
def test_a_late_outcome_never_frees_a_row_another_worker_still_holds(
    tmp_path: Path, body_raises: bool
) -> None:
    # As above, but B is still working on the row: a late FAILED would end B's live lease
    # and offer the row to a third worker while B runs it.
    with _two_workers(tmp_path) as (first, second, csv_path):
        for task in first.work(lease=300, worker="A"):
            with task:
                _lease_runs_out(csv_path)
                assert second.claim(worker="B") == ["r0"]
                if body_raises:
                    raise RuntimeError("A's download failed")
            assert task.finished
            assert task.lost == body_raises
            break
        row = first.get("r0")
        assert row is not None
        if body_raises:  # dropped: B's lease lives on
            assert [(e.status, e.worker) for e in first.history("r0")][1:] == [
                ("IN_PROGRESS", "A"),
                ("IN_PROGRESS", "B"),
            ]
            assert row["STATUS"] == "IN_PROGRESS"
            assert first.pending() == []
            assert first.claim(worker="C") == []
            assert second.release(["r0"]) == ["r0"]  # still B's to give back
        else:  # the work is done: recorded, B's lease ends
            assert row["STATUS"] == "COMPLETED"
            assert first.history("r0")[-1].worker == "A"


_HOLDER = """
import sys, time, csvjournal
journal = csvjournal.open(sys.argv[1], export=False)
with journal.batch():
    journal.record("held", "PENDING")
    print("holding", flush=True)
    time.sleep(60)
"""


@pytest.mark.slow
def test_a_stop_ends_a_loop_whose_claim_waits_for_a_journal_another_process_holds(
    tmp_path: Path,
) -> None:
    # Another process keeps a batch open: the claim would wait the busy timeout (30 s)
    # after Ctrl-C stopped `csvjournal run`, and then claim a row nobody wants any more.
    csv_path = tmp_path / "jobs.csv"
    csv_path.write_text("ID\na\nb\n")
    csvjournal.open(csv_path, key="ID").close()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(csv_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "holding"
        with csvjournal.open(csv_path, export=False, busy_timeout=30) as journal:
            stop = threading.Event()
            tasks: list[str] = []
            loop = threading.Thread(
                target=lambda: tasks.extend(t.key for t in journal.work(lease=60, stop=stop))
            )
            loop.start()
            time.sleep(1.0)  # the claim waits for the holder's batch
            assert loop.is_alive()
            stop.set()
            stopped = time.monotonic()
            loop.join(10)
            assert not loop.is_alive()
            assert time.monotonic() - stopped < 3
            assert tasks == []
    finally:
        holder.kill()
        holder.wait()
    with csvjournal.open(csv_path, export=False) as journal:
        assert "IN_PROGRESS" not in journal.counts()


@pytest.mark.slow
def test_a_task_finished_while_its_lease_is_renewed_is_never_called_lost(tmp_path: Path) -> None:
    # One worker alone, its renewer waking every 20 ms: a renewal meeting the row just
    # finished by the task's own record must not take the task for lost.
    csv_path = tmp_path / "alone.csv"
    csv_path.write_text("ID\n" + "".join(f"k{i}\n" for i in range(1500)))
    lost = []
    with csvjournal.open(csv_path, key="ID", keep_backups=0) as journal:
        for task in journal.work(lease=0.06, worker="alone"):
            with task:
                task.record("COMPLETED")
            if task.lost:
                lost.append(task.key)
        assert journal.pending() == []
    assert lost == []


class _Alarm(Exception):
    pass


def _raise_alarm(signum: int, frame: object) -> None:
    raise _Alarm


def test_a_signal_raising_while_the_loop_stops_its_renewer_still_gives_the_row_back(
    csv_path: Path,
) -> None:
    # Leaving the loop joins the renewer; a timeout's SIGALRM that raised during that
    # join skipped giving the row back: IN_PROGRESS under this worker until close().
    journal = _open(csv_path, busy_timeout=5)
    try:
        loop = journal.work(lease=0.3)
        task = next(loop)
        other = sqlite3.connect(journal.journal_path, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")  # the renewer's next extend() waits for it
        time.sleep(0.2)
        unblock = threading.Timer(0.5, other.rollback)
        unblock.start()
        previous = signal.signal(signal.SIGALRM, _raise_alarm)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.1)
            with pytest.raises(_Alarm):
                loop.close()  # the join is under way when the alarm comes
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            unblock.join()
            other.close()
        row = journal.get(task.key)
        assert row is not None
        assert row["STATUS"] == "PENDING"
        assert journal.claim(5, lease=LONG)[0] == task.key  # anyone may take it at once
    finally:
        journal.close()
