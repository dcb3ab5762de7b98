"""Concurrent writers: threads sharing one handle, processes sharing one journal file.

Every ``record()`` that returned must be in the journal exactly once, under the sequence
number it returned, and ``get()`` must show it; no writer may see an exception.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from contextlib import closing
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

import csvjournal

KEY = "ID"
COLUMNS = [KEY, "STATUS", "LAST_PROCESSED", "N", "WORKER"]  # keywords first
STATUSES = ("COMPLETED", "FAILED", "NO_ATTACHMENTS")

THREADS = 8
PER_THREAD = 1000
PROCESSES = 4
PER_PROCESS = 1000

GATE_TIMEOUT = 120.0  # seconds a worker waits for the others to be ready
JOIN_TIMEOUT = 180.0  # seconds the parent waits for a worker to finish


def _key(worker: str, i: int) -> str:
    return f"{worker}-{i:04d}"


def _status(i: int) -> str:
    return STATUSES[i % len(STATUSES)]


def _record_many(journal: csvjournal.Journal, worker: str, count: int) -> list[int]:
    """Record ``count`` new keys of ``worker``; return their seqs in recording order."""
    return [
        journal.record(_key(worker, i), _status(i), fields={"WORKER": worker}, N=i)
        for i in range(count)
    ]


# -- checks ------------------------------------------------------------------------------


def _check_journal(
    journal: csvjournal.Journal,
    seqs_by_worker: Mapping[str, list[int]],
    per_worker: int,
    *,
    pid_by_worker: Mapping[str, int],
    other_keys: Mapping[str, int],
) -> None:
    """Every worker's records are in ``events`` exactly once, under the seq ``record()``
    returned, by the recording process, and ``get()`` shows each row as recorded.

    ``other_keys`` are further keys (recorded by the test itself) with their seqs.
    """
    with closing(sqlite3.connect(journal.journal_path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        total, distinct_seqs = conn.execute(
            "SELECT count(*), count(DISTINCT seq) FROM events"
        ).fetchone()
        per_key = dict(conn.execute("SELECT key, count(*) FROM events GROUP BY key"))
        events = {
            seq: (key, status, pid)
            for seq, key, status, pid in conn.execute("SELECT seq, key, status, pid FROM events")
        }

    expected_keys = {_key(w, i) for w in seqs_by_worker for i in range(per_worker)}
    expected_keys |= set(other_keys)
    assert total == len(seqs_by_worker) * per_worker + len(other_keys)
    assert distinct_seqs == total
    assert {key: n for key, n in per_key.items() if n != 1} == {}
    assert set(per_key) == expected_keys

    returned = [seq for seqs in seqs_by_worker.values() for seq in seqs]
    returned += list(other_keys.values())
    assert len(set(returned)) == len(returned), "record() returned a seq twice"

    problems: list[str] = []
    for worker, seqs in seqs_by_worker.items():
        assert len(seqs) == per_worker, worker
        backwards = [(a, b) for a, b in pairwise(seqs) if a >= b]
        assert backwards == [], f"{worker}: seqs not increasing in recording order"
        for i, seq in enumerate(seqs):
            key = _key(worker, i)
            if events.get(seq) != (key, _status(i), pid_by_worker[worker]):
                problems.append(f"event {seq}: {events.get(seq)}, expected {key} by {worker}")
            row = journal.get(key)
            expected = {
                KEY: key,
                "STATUS": _status(i),
                "LAST_PROCESSED": row and row.get("LAST_PROCESSED"),
                "WORKER": worker,
                "N": str(i),
            }
            if row != expected or not row["LAST_PROCESSED"].endswith("Z"):
                problems.append(f"get({key!r}) == {row}, expected {expected}")
    for key, seq in other_keys.items():
        if events.get(seq, ("?",))[0] != key or journal.get(key) is None:
            problems.append(f"{key} (seq {seq}) missing: {events.get(seq)}")
    assert problems[:20] == []

    assert journal.columns == COLUMNS
    assert len(journal) == total
    expected_counts: dict[str, int] = {}
    for i in range(per_worker):
        expected_counts[_status(i)] = expected_counts.get(_status(i), 0) + len(seqs_by_worker)
    for key in other_keys:
        status = journal.get(key)["STATUS"]  # type: ignore[index]
        expected_counts[status] = expected_counts.get(status, 0) + 1
    assert journal.counts() == expected_counts


# -- threads -----------------------------------------------------------------------------


def test_threads_share_one_handle(tmp_path: Path) -> None:
    journal = csvjournal.open(tmp_path / "orders.csv", key=KEY, durability="full")
    barrier = threading.Barrier(THREADS, timeout=GATE_TIMEOUT)
    seqs_by_worker: dict[str, list[int]] = {}
    errors: list[tuple[str, str]] = []

    def work(worker: str) -> None:
        try:
            barrier.wait()
            seqs_by_worker[worker] = _record_many(journal, worker, PER_THREAD)
        except BaseException:
            errors.append((worker, traceback.format_exc()))

    threads = [threading.Thread(target=work, args=(f"t{n}",), name=f"t{n}") for n in range(THREADS)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(JOIN_TIMEOUT)
        assert not any(thread.is_alive() for thread in threads), "a thread hung"
        assert errors == []
        assert sorted(seqs_by_worker) == sorted(thread.name for thread in threads)
        _check_journal(
            journal,
            seqs_by_worker,
            PER_THREAD,
            pid_by_worker=dict.fromkeys(seqs_by_worker, os.getpid()),
            other_keys={},
        )
    finally:
        journal.close()


@pytest.mark.parametrize(
    ("bad", "error"),
    [({"SET": {1}}, TypeError), ({"": "empty name"}, csvjournal.RecordError)],
)
def test_a_bad_record_among_concurrent_ones_fails_alone(
    tmp_path: Path, bad: dict[str, object], error: type[Exception]
) -> None:
    # Group commits validate their callers' records together: a bad one must fail its own
    # caller with its own error and leave no trace, and its group must commit the rest.
    journal = csvjournal.open(tmp_path / "orders.csv", key=KEY, export=False)
    barrier = threading.Barrier(THREADS, timeout=GATE_TIMEOUT)
    refused: list[str] = []
    problems: list[str] = []

    def work(worker: str) -> None:
        barrier.wait()
        for i in range(150):
            key = _key(worker, i)
            try:
                if i % 3 == 1:
                    journal.record(f"bad-{key}", "FAILED", fields=bad)
                    problems.append(f"{key}: a bad record was accepted")
                else:
                    journal.record(key, "COMPLETED", N=i)
            except error:
                refused.append(key)
            except BaseException:
                problems.append(traceback.format_exc())

    threads = [threading.Thread(target=work, args=(f"t{n}",)) for n in range(THREADS)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(JOIN_TIMEOUT)
        assert problems == []
        assert len(refused) == THREADS * 50
        assert len(journal) == THREADS * 100
        assert journal.counts() == {"COMPLETED": THREADS * 100}
        assert journal.columns == [KEY, "STATUS", "LAST_PROCESSED", "N"]
        assert all(journal.get(f"bad-{key}") is None for key in refused)
    finally:
        journal.close()
    with closing(sqlite3.connect(tmp_path / "orders.csv.journal")) as conn:
        assert conn.execute("SELECT count(*) FROM events WHERE key LIKE 'bad-%'").fetchone() == (0,)


# -- processes ---------------------------------------------------------------------------
# Worker functions live at module level so that spawn can pickle them by reference.


def _wait_for_go(gate: Path, worker: str) -> None:
    """Say this worker is ready, then wait until the parent lets every worker go at once."""
    (gate / f"ready-{worker}").touch()
    deadline = time.monotonic() + GATE_TIMEOUT
    while not (gate / "go").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{worker}: the parent never opened the gate")
        time.sleep(0.005)


def _process_worker(
    journal: csvjournal.Journal, worker: str, count: int, gate: Path
) -> dict[str, Any]:
    """Record ``count`` keys through the journal handle the parent passed in."""
    _wait_for_go(gate, worker)
    seqs = _record_many(journal, worker, count)
    journal.close()
    return {"pid": os.getpid(), "seqs": seqs}


def _process_main(
    journal: csvjournal.Journal, worker: str, count: int, gate: Path, result: Path
) -> None:
    """A ``multiprocessing.Process`` target: the outcome goes to ``result`` as JSON; an
    exception is written there too and then raised (exit code 1)."""
    try:
        outcome = _process_worker(journal, worker, count, gate)
    except BaseException:
        result.write_text(json.dumps({"error": traceback.format_exc()}))
        raise
    result.write_text(json.dumps(outcome))


def _open_gate(gate: Path, workers: list[str], running: Callable[[], bool]) -> None:
    """Wait until every worker is ready (or one has already ended), then let them go."""
    deadline = time.monotonic() + GATE_TIMEOUT
    while time.monotonic() < deadline and running():
        if all((gate / f"ready-{worker}").exists() for worker in workers):
            break
        time.sleep(0.005)
    (gate / "go").touch()


def _run_processes(
    journal: csvjournal.Journal, ctx: Any, workers: list[str], tmp_path: Path, gate: Path
) -> dict[str, dict[str, Any]]:
    procs = {
        worker: ctx.Process(
            target=_process_main,
            args=(journal, worker, PER_PROCESS, gate, tmp_path / f"{worker}.json"),
            name=worker,
        )
        for worker in workers
    }
    try:
        for proc in procs.values():
            proc.start()
        _open_gate(gate, workers, lambda: all(p.exitcode is None for p in procs.values()))
        for proc in procs.values():
            proc.join(JOIN_TIMEOUT)
    finally:
        for proc in procs.values():
            if proc.is_alive():
                proc.kill()
                proc.join()
    outcomes: dict[str, dict[str, Any]] = {}
    for worker, proc in procs.items():
        path = tmp_path / f"{worker}.json"
        outcomes[worker] = json.loads(path.read_text()) if path.exists() else {}
        outcomes[worker]["exitcode"] = proc.exitcode
    failed = {w: o for w, o in outcomes.items() if o["exitcode"] != 0 or "error" in o}
    assert failed == {}
    return outcomes


def _run_executor(
    journal: csvjournal.Journal, ctx: Any, workers: list[str], gate: Path
) -> dict[str, dict[str, Any]]:
    with ProcessPoolExecutor(max_workers=len(workers), mp_context=ctx) as pool:
        futures = {
            worker: pool.submit(_process_worker, journal, worker, PER_PROCESS, gate)
            for worker in workers
        }
        _open_gate(gate, workers, lambda: not any(f.done() for f in futures.values()))
        errors = {w: f.exception(JOIN_TIMEOUT) for w, f in futures.items()}
        failed = {
            w: "".join(traceback.format_exception(e)) for w, e in errors.items() if e is not None
        }
        assert failed == {}
        return {worker: future.result() for worker, future in futures.items()}


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["process", "executor"])
@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_processes_share_one_journal(tmp_path: Path, start_method: str, runner: str) -> None:
    ctx = multiprocessing.get_context(start_method)
    gate = tmp_path / "gate"
    gate.mkdir()
    workers = [f"p{n}" for n in range(PROCESSES)]
    journal = csvjournal.open(tmp_path / "orders.csv", key=KEY, durability="full")
    try:
        # The parent has used its handle (open write connection) before the workers start.
        other_keys = {"parent-before": journal.record("parent-before", "COMPLETED")}

        if runner == "process":
            outcomes = _run_processes(journal, ctx, workers, tmp_path, gate)
        else:
            outcomes = _run_executor(journal, ctx, workers, gate)

        pids = {worker: outcome["pid"] for worker, outcome in outcomes.items()}
        assert len(set(pids.values())) == len(workers), "workers shared a process"
        assert os.getpid() not in pids.values()

        # The parent's handle still works after its workers came and went.
        other_keys["parent-after"] = journal.record("parent-after", "COMPLETED")
        assert other_keys["parent-after"] > max(max(o["seqs"]) for o in outcomes.values())

        _check_journal(
            journal,
            {worker: outcome["seqs"] for worker, outcome in outcomes.items()},
            PER_PROCESS,
            pid_by_worker=pids,
            other_keys=other_keys,
        )
    finally:
        journal.close()


def _record_one(journal: csvjournal.Journal, key: str) -> int:
    return journal.record(key, "COMPLETED")


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_a_journal_passed_to_a_worker_process_records_under_the_workers_plain_name(
    tmp_path: Path, start_method: str
) -> None:
    # forked, the worker's handle was named as a second handle there ("MainThread#2"): the
    # parent's, inherited and never used, held the first name
    ctx = multiprocessing.get_context(start_method)
    with csvjournal.open(tmp_path / "orders.csv", key=KEY) as journal:
        journal.record("parent", "COMPLETED")
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            pool.submit(_record_one, journal, "child").result(JOIN_TIMEOUT)
        (event,) = journal.history("child")
        assert event.worker.endswith(f":{event.pid}:MainThread")


def test_handles_opened_in_a_forked_child_have_names_of_their_own(tmp_path: Path) -> None:
    # closing the inherited, unused handle gave back a tag the child's own handle held:
    # the next handle opened took it, and two open handles recorded under one name
    csv_path = tmp_path / "orders.csv"
    inherited = csvjournal.open(csv_path, key=KEY, export=False)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        names = b""
        try:
            first = csvjournal.open(csv_path, export=False)
            inherited.close()
            second = csvjournal.open(csv_path, export=False)
            first.record("b", "COMPLETED")
            second.record("c", "COMPLETED")
            worked = (first.history("b")[0].worker, second.history("c")[0].worker)
            names = "|".join(worked).encode()
        finally:
            os.write(write, names)
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as pipe:
        first_name, second_name = pipe.read().decode().split("|")
    inherited.close()
    assert first_name != second_name
    assert second_name.endswith("#2")


# -- fork: no SQLite connection crosses it -------------------------------------------------


def _record_after_parent_closed(journal: csvjournal.Journal, ready: Any, go: Any) -> None:
    journal.record("child-0", "COMPLETED")
    ready.set()
    go.wait(60)
    for i in range(1, 100):
        journal.record(f"child-{i}", "COMPLETED")
    journal.close()


@pytest.mark.slow
def test_a_forked_child_keeps_its_records_when_the_parent_closes_first(tmp_path: Path) -> None:
    # SQLite's per-process lock table is copied by fork(): had the parent's connections
    # stayed open across it, the parent's close would delete the WAL under the child.
    ctx = multiprocessing.get_context("fork")
    journal = csvjournal.open(tmp_path / "orders.csv", key=KEY)
    journal.record("parent", "COMPLETED")
    ready, go = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_record_after_parent_closed, args=(journal, ready, go))
    child.start()
    assert ready.wait(60)
    journal.close()
    go.set()
    child.join(JOIN_TIMEOUT)
    assert child.exitcode == 0
    with closing(sqlite3.connect(tmp_path / "orders.csv.journal")) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (101,)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_forking_from_inside_a_batch_does_not_hang(tmp_path: Path) -> None:
    journal = csvjournal.open(tmp_path / "orders.csv", key=KEY)
    try:
        with journal.batch():
            journal.record("a", "COMPLETED")
            pid = os.fork()
            if pid == 0:  # the child only exits: the batch's connection is not its own
                os._exit(0)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            journal.record("b", "COMPLETED")
        assert journal.counts() == {"COMPLETED": 2}
    finally:
        journal.close()


def test_a_child_forked_inside_a_batch_is_told_at_once_it_cannot_use_the_journal(
    tmp_path: Path,
) -> None:
    # SQLite keeps its locks in the process's memory: with the batch's lock held at the
    # fork, the child's every write would wait out the busy timeout, and hold up the
    # parent's writers meanwhile.
    journal = csvjournal.open(tmp_path / "orders.csv", key=KEY, busy_timeout=20)
    read, write = os.pipe()
    try:
        with journal.batch():
            journal.record("a", "COMPLETED")
            pid = os.fork()
            if pid == 0:
                started = time.monotonic()
                try:
                    journal.record("from-child", "COMPLETED")
                    said = b"recorded"
                except csvjournal.JournalClosedError as exc:
                    said = b"fast " if time.monotonic() - started < 5 else b"slow "
                    said += str(exc).encode()
                os.write(write, said)
                os._exit(0)
        started = time.monotonic()
        journal.record("b", "COMPLETED")  # not held up by the child
        assert time.monotonic() - started < 5
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        answer = os.read(read, 4096).decode()
        assert answer.startswith("fast "), answer
        assert "forked while the journal was in use" in answer
        assert journal.counts() == {"COMPLETED": 2}
    finally:
        os.close(read)
        os.close(write)
        journal.close()


@pytest.mark.slow
def test_forking_while_another_thread_flushes_never_waits_for_the_flush(tmp_path: Path) -> None:
    # flush() held the fork gate while it waited for the exporter, and the exporter waited
    # for the gate the fork had closed: each fork then took the busy timeout.
    journal = csvjournal.open(tmp_path / "orders.csv", key=KEY, busy_timeout=10)
    stop = threading.Event()

    def flusher() -> None:
        n = 0
        while not stop.is_set():
            journal.record("a", "DONE", N=n)
            journal.flush(timeout=60)
            n += 1

    thread = threading.Thread(target=flusher)
    thread.start()
    worst = 0.0
    try:
        time.sleep(0.3)
        for _ in range(60):
            started = time.monotonic()
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            worst = max(worst, time.monotonic() - started)
            os.waitpid(pid, 0)
    finally:
        stop.set()
        thread.join(60)
        journal.close()
    assert worst < 5  # milliseconds, not the 10 s busy timeout


def test_a_journal_passed_to_a_process_many_times_is_one_handle_there(tmp_path: Path) -> None:
    # Each task of a pool brings the journal again: a handle a task, never closed, ran the
    # worker out of file descriptors. (No exporter: its temporary file, open at the moment
    # the descriptors are counted, would be counted too.)
    journal = csvjournal.open(tmp_path / "orders.csv", key=KEY, export=False)
    try:
        data = pickle.dumps(journal)
        fds = len(os.listdir("/proc/self/fd"))
        copies = [pickle.loads(data) for _ in range(50)]
        assert all(copy is copies[0] for copy in copies)
        assert copies[0] is not journal
        copies[0].record("via-copy", "COMPLETED")
        assert len(os.listdir("/proc/self/fd")) <= fds + 8
        copies[0].close()
        again = pickle.loads(data)  # closed: a new one
        assert again is not copies[0]
        again.close()
    finally:
        journal.close()
