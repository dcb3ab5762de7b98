"""``Journal.work()``: the worker loop that claims rows one at a time and finishes them.

A task used as a context manager records the success status when its body returns, FAILED
with ERROR_MESSAGE when it raises an exception (the loop goes on), and gives its row back
on KeyboardInterrupt or when the loop is left early. A thread renews the lease while a
body runs; a worker stopped (SIGSTOP) past its lease loses the row to another worker.
"""

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
from pathlib import Path

import pytest
from _jobs import KEY
from _jobs import open_journal as _open
from _jobs import write_csv as _write_csv
from structlog.testing import capture_logs

from csvjournal import Journal
from csvjournal.events import Event

KEYS = ["W-7", "W-3", "W-9", "W-1", "W-5"]  # CSV order, not sorted order

LONG = 600.0  # a lease that does not run out during a test
WAIT = 30.0  # generous deadline for anything a test waits for
CLOCK_SLACK = 0.05  # event times are truncated to the millisecond
RUNAWAY = 20  # a loop visiting more rows than this is not going to stop


class _Boom(Exception):
    pass


@pytest.fixture
def csv_path(tmp_path: Path) -> Path:
    path = tmp_path / "orders.csv"
    _write_csv(path, KEYS)
    return path


@pytest.fixture
def jr(csv_path: Path) -> Iterator[Journal]:
    """The exporting journal of a five-row CSV, all rows PENDING."""
    with _open(csv_path) as journal:
        yield journal


def _me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"


def _trail(journal: Journal, key: str) -> list[tuple[str, str | None]]:
    return [(e.status, e.note) for e in journal.history(key)]


def _claims(events: list[Event]) -> list[Event]:
    return [e for e in events if e.status == "IN_PROGRESS"]


def _renewers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "csvjournal-renewer"]


def _wait_for(what: str, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _finish_all_but_first(journal: Journal) -> None:
    for key in KEYS[1:]:
        journal.record(key, "COMPLETED")


# -- success and failure -------------------------------------------------------------------


@pytest.mark.parametrize("success_status", [None, "NO_ATTACHMENTS"])
@pytest.mark.parametrize("style", ["with", "bare"])
def test_each_row_is_claimed_and_finished_with_the_success_status(
    jr: Journal, success_status: str | None, style: str
) -> None:
    options = {} if success_status is None else {"success_status": success_status}
    status = success_status or "COMPLETED"
    seen: list[tuple[str, str]] = []
    for task in jr.work(lease=LONG, **options):  # type: ignore[arg-type]
        assert len(seen) < RUNAWAY
        if style == "with":
            with task:
                seen.append((task.key, jr.get(task.key)["STATUS"]))  # type: ignore[index]
        else:  # the loop finishes an unfinished task at the next iteration
            seen.append((task.key, jr.get(task.key)["STATUS"]))  # type: ignore[index]
    assert seen == [(key, "IN_PROGRESS") for key in KEYS]
    assert jr.counts() == {status: len(KEYS)}
    for key in KEYS:
        events = jr.history(key)
        assert [(e.status, e.worker, e.note) for e in events] == [
            ("IN_PROGRESS", _me(), None),
            (status, _me(), None),
        ]
    assert jr.next_lease_end() is None
    assert _renewers() == []


def test_the_worker_name_is_on_the_claims_and_the_records_of_the_loop(jr: Journal) -> None:
    for task in jr.work(lease=LONG, worker="bot-1"):
        with task:
            jr.record(task.key, PAGES=3)  # a plain record in the loop's thread
    for key in KEYS:
        assert [(e.status, e.worker) for e in jr.history(key)] == [
            ("IN_PROGRESS", "bot-1"),
            ("IN_PROGRESS", "bot-1"),
            ("COMPLETED", "bot-1"),
        ]
    jr.record(KEYS[0], NOTE="after the loop")
    assert jr.history(KEYS[0])[-1].worker == _me()


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (ValueError("bad row\nsecond line"), "ValueError: bad row"),
        (RuntimeError(), "RuntimeError"),
        (OSError("\n   disk full  \n"), "OSError: disk full"),
        (_Boom("x"), "_Boom: x"),
    ],
)
def test_an_exception_records_failed_with_the_error_and_the_loop_goes_on(
    jr: Journal, error: Exception, message: str
) -> None:
    seen: list[str] = []
    with capture_logs() as logs:
        for task in jr.work(lease=LONG, max_attempts=1):
            assert len(seen) < RUNAWAY
            seen.append(task.key)
            with task:
                if task.key == KEYS[1]:
                    raise error
    assert seen == KEYS
    row = jr.get(KEYS[1])
    assert row is not None
    assert (row["STATUS"], row["ERROR_MESSAGE"]) == ("FAILED", message)
    assert jr.history(KEYS[1])[-1].fields == {"ERROR_MESSAGE": message}
    assert jr.counts() == {"COMPLETED": len(KEYS) - 1, "FAILED": 1}
    assert [e.get("key") for e in logs if e["event"] == "task_failed"] == [KEYS[1]]
    # FAILED is not terminal: still pending, for a later run allowing more attempts.
    assert jr.pending() == [KEYS[1]]


@pytest.mark.parametrize("max_attempts", [1, 2, 3])
def test_a_failing_row_is_retried_up_to_max_attempts(jr: Journal, max_attempts: int) -> None:
    seen: list[str] = []
    for task in jr.work(lease=LONG, max_attempts=max_attempts):
        assert len(seen) < RUNAWAY
        seen.append(task.key)
        with task:
            if task.key == KEYS[0]:
                raise _Boom("always")
    assert seen.count(KEYS[0]) == max_attempts
    assert sorted(seen) == sorted(KEYS + [KEYS[0]] * (max_attempts - 1))
    assert _trail(jr, KEYS[0]) == [("IN_PROGRESS", None), ("FAILED", None)] * max_attempts
    assert all(_trail(jr, key) == [("IN_PROGRESS", None), ("COMPLETED", None)] for key in KEYS[1:])
    # The loop stopped claiming it; a loop allowing one more attempt takes it once more.
    again = [task.key for task in jr.work(lease=LONG, max_attempts=max_attempts + 1)]
    assert again == [KEYS[0]]
    assert jr.get(KEYS[0])["STATUS"] == "COMPLETED"  # type: ignore[index]


def test_a_row_that_fails_twice_then_succeeds(jr: Journal) -> None:
    _finish_all_but_first(jr)
    attempts = 0
    for task in jr.work(lease=LONG, max_attempts=3):
        attempts += 1
        assert attempts < RUNAWAY
        with task:
            if attempts < 3:
                raise _Boom(f"attempt {attempts}")
    assert attempts == 3
    assert [(e.status, dict(e.fields)) for e in jr.history(KEYS[0])] == [
        ("IN_PROGRESS", {}),
        ("FAILED", {"ERROR_MESSAGE": "_Boom: attempt 1"}),
        ("IN_PROGRESS", {}),
        ("FAILED", {"ERROR_MESSAGE": "_Boom: attempt 2"}),
        ("IN_PROGRESS", {}),
        ("COMPLETED", {}),
    ]


# -- what the body records -------------------------------------------------------------------


@pytest.mark.parametrize("how", ["positional", "fields", "keyword"])
def test_a_status_the_body_records_stands(jr: Journal, how: str) -> None:
    tasks = []
    for task in jr.work(lease=LONG):
        tasks.append(task)
        with task:
            if how == "positional":
                task.record("NO_ATTACHMENTS", PAGES=0)
            elif how == "fields":
                task.record(fields={"STATUS": "NO_ATTACHMENTS", "PAGES": 0})
            else:
                task.record(PAGES=0, **{"STATUS": "NO_ATTACHMENTS"})
    assert [(t.key, t.finished) for t in tasks] == [(key, True) for key in KEYS]
    assert jr.counts() == {"NO_ATTACHMENTS": len(KEYS)}
    for key in KEYS:
        assert _trail(jr, key) == [("IN_PROGRESS", None), ("NO_ATTACHMENTS", None)]
        assert jr.get(key)["PAGES"] == "0"  # type: ignore[index]


def test_a_record_without_a_status_leaves_the_task_running(jr: Journal) -> None:
    _finish_all_but_first(jr)
    observed = []
    for task in jr.work(lease=LONG):
        with task:
            task.record(PROGRESS="50%")
            observed.append(task.finished)
            task.record("IN_PROGRESS", PROGRESS="90%")
            observed += [task.finished, KEYS[0] in jr.pending()]
    assert observed == [False, False, False]  # still running, still leased
    assert [e.status for e in jr.history(KEYS[0])] == ["IN_PROGRESS"] * 3 + ["COMPLETED"]
    assert jr.get(KEYS[0])["PROGRESS"] == "90%"  # type: ignore[index]


def test_fail_records_the_message_and_other_fields(jr: Journal) -> None:
    _finish_all_but_first(jr)
    for task in jr.work(lease=LONG, max_attempts=1):
        with task:
            task.fail("no network", CODE=7)
    row = jr.get(KEYS[0])
    assert row is not None
    assert (row["STATUS"], row["ERROR_MESSAGE"], row["CODE"]) == ("FAILED", "no network", "7")
    assert [e.status for e in jr.history(KEYS[0])] == ["IN_PROGRESS", "FAILED"]


def test_an_exception_after_recording_keeps_the_record(jr: Journal) -> None:
    seen: list[str] = []
    for task in jr.work(lease=LONG):
        assert len(seen) < RUNAWAY
        seen.append(task.key)
        with task:
            if task.key == KEYS[0]:
                task.record("NO_ATTACHMENTS")
                raise _Boom("after the record")
    assert seen == KEYS
    assert _trail(jr, KEYS[0]) == [("IN_PROGRESS", None), ("NO_ATTACHMENTS", None)]
    assert jr.counts() == {"NO_ATTACHMENTS": 1, "COMPLETED": len(KEYS) - 1}


def test_a_task_released_by_its_body_comes_back_without_an_attempt_counted(jr: Journal) -> None:
    _finish_all_but_first(jr)
    visits = 0
    for task in jr.work(lease=LONG, max_attempts=1):
        visits += 1
        assert visits < RUNAWAY
        with task:
            if visits == 1:
                task.release()
    assert visits == 2
    assert _trail(jr, KEYS[0]) == [
        ("IN_PROGRESS", None),
        ("PENDING", f"released by {_me()}"),
        ("IN_PROGRESS", None),
        ("COMPLETED", None),
    ]


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


# -- leaving the loop ------------------------------------------------------------------------


def _leave(journal: Journal, how: str) -> None:
    if how == "break":
        for _task in journal.work(lease=LONG):
            break
    elif how == "raise":
        with pytest.raises(_Boom):
            for _task in journal.work(lease=LONG):
                raise _Boom
    elif how == "close":
        loop = journal.work(lease=LONG)
        next(loop)
        loop.close()
    elif how in ("KeyboardInterrupt", "SystemExit"):
        error = KeyboardInterrupt if how == "KeyboardInterrupt" else SystemExit
        seen = []
        with pytest.raises(error):
            for task in journal.work(lease=LONG):
                seen.append(task.key)
                with task:
                    raise error
        assert seen == KEYS[:1]
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["break", "raise", "close", "KeyboardInterrupt", "SystemExit"])
def test_leaving_the_loop_gives_the_current_row_back(jr: Journal, how: str) -> None:
    _leave(jr, how)
    assert _trail(jr, KEYS[0]) == [("IN_PROGRESS", None), ("PENDING", f"released by {_me()}")]
    assert jr.get(KEYS[0])["STATUS"] == "PENDING"  # type: ignore[index]
    assert all(jr.history(key) == [] for key in KEYS[1:])
    assert jr.pending() == KEYS
    assert jr.next_lease_end() is None
    _wait_for("the renewer thread to end", lambda: _renewers() == [], 5.0)
    # Given back, not failed: the attempt was not counted.
    assert jr.claim(1, lease=LONG, max_attempts=1) == KEYS[:1]


def test_a_break_inside_the_task_block_finishes_the_row_unless_released_first(
    jr: Journal,
) -> None:
    # `break` leaves `with task:` normally: the block's contract records the success
    for task in jr.work(lease=LONG):
        with task:
            break
    assert jr.get(KEYS[0])["STATUS"] == "COMPLETED"  # type: ignore[index]
    for task in jr.work(lease=LONG):
        with task:
            task.release()  # what to do to stop without finishing the row
            break
    assert jr.get(KEYS[1])["STATUS"] == "PENDING"  # type: ignore[index]
    assert jr.pending() == KEYS[1:]


def test_a_stop_event_ends_the_loop_after_the_current_task(jr: Journal) -> None:
    stop = threading.Event()
    seen: list[str] = []
    for task in jr.work(lease=LONG, stop=stop):
        assert len(seen) < RUNAWAY
        with task:
            seen.append(task.key)
            if len(seen) == 2:
                stop.set()
    assert seen == KEYS[:2]
    assert jr.counts() == {"COMPLETED": 2, "PENDING": len(KEYS) - 2}
    assert all(jr.history(key) == [] for key in KEYS[2:])
    assert list(jr.work(lease=LONG, stop=stop)) == []  # already set: claims nothing
    assert jr.pending() == KEYS[2:]


def test_a_stop_event_ends_a_loop_that_waits_for_other_workers(jr: Journal) -> None:
    _finish_all_but_first(jr)
    assert jr.claim(1, lease=LONG, worker="other") == KEYS[:1]
    stop = threading.Event()
    timer = threading.Timer(0.5, stop.set)
    timer.start()
    started = time.monotonic()
    assert list(jr.work(lease=LONG, stop=stop)) == []
    timer.join()
    assert time.monotonic() - started < WAIT
    assert [e.worker for e in jr.history(KEYS[0])] == ["other"]


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
