"""``Journal.work()``: the worker loop that claims rows one at a time and finishes them.

A task used as a context manager records the success status when its body returns, FAILED
with ERROR_MESSAGE when it raises an exception (the loop goes on), and gives its row back
on KeyboardInterrupt or when the loop is left early. How the loop treats leases (renewal,
waiting for other workers, losing a row) is in test_work_leases.py.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import _work
import pytest
from _jobs import open_journal as _open
from _work import KEYS, LONG, WAIT
from _work import finish_all_but_first as _finish_all_but_first
from _work import me as _me
from _work import trail as _trail
from _work import wait_for as _wait_for
from structlog.testing import capture_logs

import csvjournal
from csvjournal import Journal

RUNAWAY = 20  # a loop visiting more rows than this is not going to stop


class _Boom(Exception):
    pass


# The fixtures of the five-row CSV and its exporting journal (assigned, not imported by name,
# so that the test parameters naming them do not shadow an import).
csv_path = _work.csv_path
jr = _work.jr


def _renewers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "csvjournal-renewer"]


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


# -- what the loop must survive ----------------------------------------------------------------


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise ValueError("no text")


@pytest.mark.parametrize(
    ("raised", "encoding", "said"),
    [
        (_Boom("payé → 3 €"), "cp1252", "_Boom: payé ? 3 €"),
        (_Boom("no such file: caf\udce9.pdf"), "utf-8", "_Boom: no such file: caf?.pdf"),
        (_Unprintable(), "utf-8", "_Unprintable"),
    ],
    ids=["cp1252-arrow", "lone-surrogate", "str-fails"],
)
def test_an_error_the_csv_cannot_write_is_recorded_as_it_can(
    tmp_path: Path, raised: Exception, encoding: str, said: str
) -> None:
    csv = tmp_path / "sheet.csv"
    csv.write_bytes("ID\nå\nb\n".encode(encoding))
    with csvjournal.open(csv, key="ID", encoding=encoding) as journal:
        for task in journal.work(lease=LONG, max_attempts=1):
            with task:
                if task.key == "å":
                    raise raised
        assert journal.counts() == {"FAILED": 1, "COMPLETED": 1}
        row = journal.get("å")
        assert row is not None
        assert row["ERROR_MESSAGE"] == said


def test_the_loop_refuses_to_run_inside_a_batch_of_its_thread(jr: Journal) -> None:
    # its lease renewals would wait for the block's own write lock: for ever
    with pytest.raises(csvjournal.BatchOpenError, match=r"work\(\) inside a batch"), jr.batch():
        next(jr.work(lease=LONG))
    assert jr.pending() == KEYS


def test_a_loop_asking_for_a_row_after_the_close_claims_none(csv_path: Path) -> None:
    _open(csv_path).close()
    journal = csvjournal.open(csv_path, export=False)
    loop = journal.work(lease=LONG)
    with next(loop):
        pass
    journal.close()
    with pytest.raises(csvjournal.JournalClosedError):
        next(loop)
    with csvjournal.open(csv_path, export=False) as again:
        assert again.counts() == {"COMPLETED": 1, "PENDING": len(KEYS) - 1}


def test_a_record_undone_with_its_block_leaves_the_task_to_fail(jr: Journal) -> None:
    seen = []
    for task in jr.work(lease=LONG, max_attempts=1):
        seen.append(task.key)
        with task:
            if task.key == KEYS[0]:
                with jr.batch():
                    task.record("COMPLETED", N=1)
                    raise _Boom("invoice service down")  # undoes the record
    assert seen == KEYS  # at once: no wait for the lease to run out
    row = jr.get(KEYS[0])
    assert row is not None
    assert (row["STATUS"], row["ERROR_MESSAGE"]) == ("FAILED", "_Boom: invoice service down")
    assert "N" not in row  # the undone record left no column


def test_a_record_committed_with_its_block_stands_when_the_task_raises_after(jr: Journal) -> None:
    for task in jr.work(lease=LONG):
        with task:
            with jr.batch():
                task.record("COMPLETED", N=1)
            raise _Boom("after the block")
    assert jr.counts() == {"COMPLETED": len(KEYS)}


def test_a_finished_tasks_second_outcome_is_refused_not_dropped(jr: Journal) -> None:
    # It returned None, marked the task lost (as if another worker had taken the row over)
    # and lost its fields.
    for task in jr.work(lease=60):
        with task:
            assert task.record("COMPLETED") is not None
            with pytest.raises(csvjournal.RecordError, match="finished already"):
                task.record("FAILED", B=2)
        break
    assert not task.lost
    assert jr.get(task.key)["STATUS"] == "COMPLETED"  # type: ignore[index]


@pytest.mark.parametrize("retry", [False, True])
def test_an_outcome_undone_with_its_block_leaves_the_task_unfinished(
    jr: Journal, retry: bool
) -> None:
    # The task stayed finished: the loop recorded nothing, stopped renewing, and waited
    # for the lease it held itself; a second record() was refused.
    first = KEYS[0]
    for task in jr.work(lease=60):
        try:
            with jr.batch():
                task.record("COMPLETED", NOTE="undone")
                if task.key == first:
                    raise _Boom
        except _Boom:
            if retry:
                assert task.record("COMPLETED", NOTE="again") is not None
    statuses = {key: jr.get(key)["STATUS"] for key in KEYS}  # type: ignore[index]
    assert set(statuses.values()) == {"COMPLETED"}
    assert jr.get(first)["NOTE"] == ("again" if retry else "")  # type: ignore[index]
