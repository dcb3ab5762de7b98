"""Claims and leases in one process: claim, extend, release, records that end a lease, close.

The tests use one process, and a second handle where another worker is needed. Expiry and
recovery, the rows ``pending()`` and ``claim()`` agree on, and many worker processes at once
are in test_leases_expiry.py, test_leases_open_rows.py and test_leases_processes.py.
"""

from __future__ import annotations

import math
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _leases
import numpy as np
import pytest
from _jobs import TERMINAL
from _jobs import open_journal as _open
from _leases import KEYS, LONG, SHORT, WAIT
from _leases import Rollback as _Rollback
from _leases import claims as _claims
from _leases import csv_statuses as _csv_statuses
from _leases import wait_for as _wait_for

import csvjournal
from csvjournal import Journal
from csvjournal._claimargs import MAX_LEASE_SECONDS

# The fixtures of the ten-row CSV and its exporting journal (assigned, not imported by name,
# so that the test parameters naming them do not shadow an import).
csv_path = _leases.csv_path
jr = _leases.jr


@pytest.fixture
def other(csv_path: Path, jr: Journal) -> Iterator[Journal]:
    """A second, non-exporting handle on the same journal (another worker)."""
    with _open(csv_path, export=False) as journal:
        yield journal


def _statuses(journal: Journal) -> dict[str, str]:
    return {key: journal.get(key)["STATUS"] for key in KEYS}  # type: ignore[index]


def _me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"


# -- claim ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 3, 4])
def test_claim_takes_n_rows_in_csv_order(jr: Journal, n: int) -> None:
    taken: list[str] = []
    while len(taken) < len(KEYS):
        keys = jr.claim(n, lease=LONG)
        assert keys == KEYS[len(taken) : len(taken) + n]
        taken += keys
    assert taken == KEYS
    assert jr.claim(n, lease=LONG) == []


def test_claim_returns_fewer_or_none_when_fewer_are_pending(jr: Journal) -> None:
    jr.record(KEYS[0], "COMPLETED")
    jr.record(KEYS[5], "NO_ATTACHMENTS")
    jr.record(KEYS[7], "FAILED")  # not terminal: still to do
    rest = [k for i, k in enumerate(KEYS) if i not in (0, 5)]
    assert jr.claim(100, lease=LONG) == rest
    assert jr.claim(1, lease=LONG) == []
    assert jr.claim(100, lease=LONG) == []
    assert jr.pending() == []


def test_a_claimed_row_is_in_progress_in_get_counts_and_the_csv(jr: Journal) -> None:
    assert jr.claim(2, lease=LONG) == KEYS[:2]
    for key in KEYS[:2]:
        row = jr.get(key)
        assert row is not None
        assert row["STATUS"] == "IN_PROGRESS"
        assert row["NAME"] == f"name of {key}"  # the claim changes nothing else
        assert row["LAST_PROCESSED"].endswith("Z")
    assert jr.counts() == {"IN_PROGRESS": 2, "PENDING": len(KEYS) - 2}
    on_disk = _csv_statuses(jr)
    assert on_disk == {k: "IN_PROGRESS" if k in KEYS[:2] else "PENDING" for k in KEYS}


def test_each_claimed_row_gets_one_event_naming_the_worker(jr: Journal) -> None:
    assert jr.claim(3, lease=LONG, worker="robot-7") == KEYS[:3]
    for key in KEYS[:3]:
        (event,) = jr.history(key)
        assert (event.key, event.status, dict(event.fields)) == (key, "IN_PROGRESS", {})
        assert (event.worker, event.pid, event.note) == ("robot-7", os.getpid(), None)
    for key in KEYS[3:]:
        assert jr.history(key) == []


def test_the_default_worker_is_host_pid_thread(jr: Journal) -> None:
    assert jr.claim(1, lease=LONG) == KEYS[:1]
    assert jr.history(KEYS[0])[-1].worker == _me()

    taken: list[str] = []
    thread = threading.Thread(target=lambda: taken.extend(jr.claim(1)), name="claimer-42")
    thread.start()
    thread.join(WAIT)
    assert taken == KEYS[1:2]
    worker = jr.history(KEYS[1])[-1].worker
    assert worker == f"{socket.gethostname()}:{os.getpid()}:claimer-42"


@pytest.mark.parametrize(
    ("n", "lease"),
    [
        (0, 10.0),
        (-1, 10.0),
        (1, 0.0),
        (1, -5.0),
        (1, math.nan),
        (0, 0.0),
        (1, math.inf),
        (1, MAX_LEASE_SECONDS + 1),
    ],
)
def test_claim_refuses_bad_arguments_and_changes_nothing(jr: Journal, n: int, lease: float) -> None:
    with pytest.raises(csvjournal.SettingsError, match="claim") as caught:
        jr.claim(n, lease=lease)
    assert isinstance(caught.value, ValueError)
    assert jr.pending() == KEYS
    assert jr.counts() == {"PENDING": len(KEYS)}
    assert all(jr.history(key) == [] for key in KEYS)


@pytest.mark.parametrize("lease", [0.0, -1.0, math.nan, math.inf, 1e12])
def test_extend_refuses_a_lease_that_is_not_positive(jr: Journal, lease: float) -> None:
    taken = jr.claim(1, lease=LONG)
    with pytest.raises(csvjournal.SettingsError, match="extend"):
        jr.extend(taken, lease)
    assert jr.counts() == {"IN_PROGRESS": 1, "PENDING": len(KEYS) - 1}


def test_work_refuses_a_success_status_that_is_not_terminal(jr: Journal) -> None:
    with pytest.raises(csvjournal.SettingsError, match="not terminal"):
        jr.work(success_status="DONE-ISH")
    assert jr.pending() == KEYS


def test_max_attempts_skips_rows_claimed_that_often(jr: Journal) -> None:
    # KEYS[0] claimed twice (its first lease ran out), KEYS[1] once, the rest never.
    assert jr.claim(1, lease=SHORT, worker="a") == KEYS[:1]
    _wait_for("the lease to run out", lambda: KEYS[0] in jr.pending())
    assert jr.claim(2, lease=SHORT, worker="b") == KEYS[:2]
    _wait_for("the leases to run out", lambda: jr.pending()[:2] == KEYS[:2])

    assert jr.claim(100, lease=LONG, max_attempts=1) == KEYS[2:]
    assert jr.claim(100, lease=LONG, max_attempts=1) == []
    assert jr.claim(100, lease=LONG, max_attempts=2) == KEYS[1:2]
    assert jr.claim(100, lease=LONG, max_attempts=2) == []
    # pending() does not count attempts: KEYS[0] is still to do, for a more patient claimer.
    assert jr.pending() == KEYS[:1]
    assert jr.claim(100, lease=LONG, max_attempts=3) == KEYS[:1]
    assert [e.worker for e in _claims(jr.history(KEYS[0]))] == ["a", "b", _me()]


def test_a_claim_in_a_batch_that_raises_is_undone(jr: Journal) -> None:
    with pytest.raises(_Rollback), jr.batch():
        assert jr.claim(2, lease=LONG) == KEYS[:2]
        jr.record(KEYS[2], "COMPLETED")
        assert jr.get(KEYS[0])["STATUS"] == "IN_PROGRESS"  # type: ignore[index]
        raise _Rollback
    assert jr.pending() == KEYS
    assert jr.counts() == {"PENDING": len(KEYS)}
    assert all(jr.history(key) == [] for key in KEYS)
    assert _csv_statuses(jr) == dict.fromkeys(KEYS, "PENDING")
    # No attempt was counted, and the next claim finds no lease to mention.
    assert jr.claim(1, lease=LONG, max_attempts=1) == KEYS[:1]
    assert [(e.status, e.note) for e in jr.history(KEYS[0])] == [("IN_PROGRESS", None)]


def test_a_claim_in_a_nested_batch_that_raises_is_undone_alone(jr: Journal) -> None:
    with jr.batch():
        assert jr.claim(1, lease=LONG, worker="outer") == KEYS[:1]
        with pytest.raises(_Rollback), jr.batch():
            assert jr.claim(2, lease=LONG, worker="inner") == KEYS[1:3]
            raise _Rollback
        assert jr.claim(1, lease=LONG, worker="outer") == KEYS[1:2]
    assert jr.pending() == KEYS[2:]
    assert [e.worker for e in jr.history(KEYS[1])] == ["outer"]
    assert jr.history(KEYS[2]) == []


# -- extend, release ---------------------------------------------------------------------


def test_extend_renews_only_rows_still_held_by_this_worker(jr: Journal, other: Journal) -> None:
    k = KEYS
    assert jr.claim(4, lease=SHORT) == k[:4]
    jr.record(k[2], "COMPLETED")  # finished: nothing to renew
    jr.release([k[3]])  # given back: nothing to renew
    _wait_for("the leases to run out", lambda: k[0] in jr.pending() and k[1] in jr.pending())
    assert other.claim(1, lease=LONG, worker="thief") == k[:1]  # took k[0] over

    assert jr.extend([k[0], k[1], k[2], k[3], k[9], "no-such-key"], LONG) == [k[1]]
    assert jr.pending() == [k[3], *k[4:]]
    assert jr.get(k[0])["STATUS"] == "IN_PROGRESS"  # type: ignore[index]
    assert jr.get(k[2])["STATUS"] == "COMPLETED"  # type: ignore[index]
    assert jr.get(k[3])["STATUS"] == "PENDING"  # type: ignore[index]
    # k[0] stays the thief's: its lease is untouched by our extend, and renewable by it.
    assert other.extend([k[0]], SHORT) == [k[0]]
    _wait_for("the thief's lease to run out", lambda: k[0] in jr.pending())
    assert k[1] not in jr.pending()


class _Thread:
    """A thread of its own that runs what it is given, one call at a time."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1)

    def __call__(self, action: Callable[[], list[str]]) -> list[str]:
        return self._pool.submit(action).result(WAIT)

    def close(self) -> None:
        self._pool.shutdown()


def _lapse(journal: Journal, key: str) -> None:
    """End ``key``'s lease now (as if its worker had been stopped past it)."""
    with sqlite3.connect(journal.journal_path) as conn:
        conn.execute("UPDATE rows SET lease_until = 1 WHERE key = ?", (key,))


@pytest.mark.parametrize("named", [False, True], ids=["default names", "worker= names"])
def test_a_late_thread_never_releases_or_renews_the_claim_another_thread_took_over(
    jr: Journal, named: bool
) -> None:
    # Threads share one handle; A's lease ran out and B, another thread, took the row over.
    k = KEYS[0]
    a, b = ("A", "B") if named else (None, None)
    in_a, in_b = _Thread(), _Thread()
    assert in_a(lambda: jr.claim(1, lease=LONG, worker=a)) == [k]
    _lapse(jr, k)
    assert in_b(lambda: jr.claim(1, lease=LONG, worker=b)) == [k]
    holder = jr.history(k)[-1].worker

    assert in_a(lambda: jr.release([k])) == []  # A, late: its own claim, not B's
    assert in_a(lambda: jr.extend([k], SHORT)) == []
    in_a.close()
    if named:
        assert jr.release([k], worker="A") == []
        assert jr.extend([k], SHORT, worker="A") == []
    assert jr.history(k)[-1].worker == holder
    assert jr.get(k)["STATUS"] == "IN_PROGRESS"  # type: ignore[index]
    assert k not in jr.pending()
    assert jr.claim(1, lease=LONG, worker="C") == [KEYS[1]]  # B's row stays B's

    # A thread that claimed nothing (a dispatcher) acts on the newest claim: B's.
    assert jr.extend([k], LONG) == [k]
    assert jr.release([k]) == [k]
    assert jr.get(k)["STATUS"] == "PENDING"  # type: ignore[index]
    in_b.close()


def test_close_gives_back_only_the_claims_still_holding_their_rows(jr: Journal) -> None:
    k = KEYS[0]
    assert _Thread()(lambda: jr.claim(1, lease=LONG, worker="A")) == [k]
    _lapse(jr, k)
    assert _Thread()(lambda: jr.claim(1, lease=LONG, worker="B")) == [k]
    jr.close()
    with _open(jr.csv_path, export=False) as journal:
        trail = [(e.status, e.worker, e.note) for e in journal.history(k)]
        assert trail[:2] == [("IN_PROGRESS", "A", None), ("IN_PROGRESS", "B", "lease of A expired")]
        assert [(status, note) for status, _, note in trail[2:]] == [
            ("PENDING", f"released by {trail[2][1]}")
        ]


def test_extend_moves_the_lease_end_and_works_from_another_thread(jr: Journal) -> None:
    assert jr.claim(1, lease=2.0) == KEYS[:1]
    before = time.time()
    renewed: list[str] = []
    thread = threading.Thread(target=lambda: renewed.extend(jr.extend(KEYS[:1], 100.0)))
    thread.start()
    thread.join(WAIT)
    after = time.time()
    assert renewed == KEYS[:1]
    end = jr.next_lease_end()
    assert end is not None
    assert before + 100.0 <= end <= after + 100.0


def test_release_gives_rows_back_without_counting_the_attempt(jr: Journal, other: Journal) -> None:
    k = KEYS
    assert jr.claim(3, lease=LONG, max_attempts=1) == k[:3]
    assert other.claim(1, lease=LONG, worker="someone-else") == k[3:4]
    jr.record(k[2], "COMPLETED")

    assert jr.release([k[0], k[2], k[3]]) == [k[0]]  # k[2] done, k[3] not ours
    assert jr.get(k[0])["STATUS"] == "PENDING"  # type: ignore[index]
    assert jr.get(k[3])["STATUS"] == "IN_PROGRESS"  # type: ignore[index]
    assert jr.get(k[2])["STATUS"] == "COMPLETED"  # type: ignore[index]
    assert jr.pending() == [k[0], *k[4:]]
    claim, release = jr.history(k[0])
    assert (release.status, release.worker, release.note) == (
        "PENDING",
        _me(),
        f"released by {_me()}",
    )
    assert claim.seq < release.seq
    # Given back, not failed: a claimer allowing one attempt gets it again.
    assert jr.claim(1, lease=LONG, max_attempts=1) == k[:1]
    assert jr.history(k[0])[-1].note is None  # a released row's next claim names no lost lease
    assert jr.release([k[1]], note="shutting down") == [k[1]]
    assert jr.history(k[1])[-1].note == f"shutting down by {_me()}"


@pytest.mark.parametrize(
    ("status", "leased_after"),
    [
        ("COMPLETED", False),
        ("NO_ATTACHMENTS", False),
        ("FAILED", False),
        (None, True),
        ("IN_PROGRESS", True),
    ],
)
def test_a_record_with_another_status_ends_the_lease(
    jr: Journal, status: str | None, leased_after: bool
) -> None:
    assert jr.claim(1, lease=LONG) == KEYS[:1]
    jr.record(KEYS[0], status, NOTE="x")
    assert (jr.next_lease_end() is not None) == leased_after
    assert (KEYS[0] in jr.pending()) == (not leased_after and status not in TERMINAL)
    assert jr.extend(KEYS[:1], LONG) == (KEYS[:1] if leased_after else [])
    if not leased_after:
        # Another worker claims a FAILED row at once; a terminal one never.
        expected = KEYS[:1] if status not in TERMINAL else KEYS[1:2]
        assert jr.claim(1, lease=LONG, worker="next") == expected
        assert jr.history(expected[0])[-1].note is None


# -- close ---------------------------------------------------------------------------------


@pytest.mark.parametrize("trial", range(3))
def test_close_while_threads_claim_leaves_no_row_held(tmp_path: Path, trial: int) -> None:
    # A claim under way as close() gave the handle's rows back committed after it: its
    # row stayed IN_PROGRESS for the whole lease (4 rows in every try).
    csv = tmp_path / "rows.csv"
    csv.write_text("ID\n" + "".join(f"{n}\n" for n in range(3000)))
    journal = csvjournal.open(csv, key="ID", durability="normal", keep_backups=0)
    stop = threading.Event()
    claimed: list[str] = []

    def claim() -> None:
        while not stop.is_set():
            try:
                claimed.extend(journal.claim(1, lease=300))
            except csvjournal.JournalClosedError:
                return

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for thread in threads:
        thread.start()
    _wait_for("claims", lambda: len(claimed) > 20 * (trial + 1))
    journal.close()
    stop.set()
    for thread in threads:
        thread.join()
    with csvjournal.open(csv, export=False) as after:
        assert after.counts().get("IN_PROGRESS", 0) == 0
        assert len(after.pending()) == 3000


def test_close_gives_held_rows_back_and_leaves_recorded_rows_alone(
    csv_path: Path, jr: Journal
) -> None:
    k = KEYS
    worker = _open(csv_path, export=False)  # a second handle of this thread: its own name
    me = f"{_me()}#2"
    assert worker.claim(6, lease=LONG) == k[:6]
    assert jr.claim(1, lease=LONG, worker="parent") == k[6:7]  # another worker's row
    assert worker.claim(1, lease=SHORT) == k[7:8]
    _wait_for("the short lease to run out", lambda: k[7] in jr.pending())
    assert jr.claim(1, lease=LONG, worker="taker") == k[7:8]  # taken over from `worker`
    worker.record(k[1], "COMPLETED")
    worker.record(k[2], "NO_ATTACHMENTS")
    worker.record(k[3], "FAILED", ERROR_MESSAGE="boom")
    worker.record(k[4], ATTACHMENTS=2)  # no status: still held

    worker.close()
    assert _statuses(jr) == {
        k[0]: "PENDING",
        k[1]: "COMPLETED",
        k[2]: "NO_ATTACHMENTS",
        k[3]: "FAILED",
        k[4]: "PENDING",
        k[5]: "PENDING",
        k[6]: "IN_PROGRESS",
        k[7]: "IN_PROGRESS",
        k[8]: "PENDING",
        k[9]: "PENDING",
    }
    assert jr.get(k[4])["ATTACHMENTS"] == "2"  # type: ignore[index]
    for key in (k[0], k[4], k[5]):
        assert jr.history(key)[-1].note == f"released by {me}"
    for key in (k[1], k[2], k[3]):  # recorded: nothing given back
        assert [e.note for e in jr.history(key)] == [None, None]
    assert [e.worker for e in jr.history(k[6])] == ["parent"]
    assert [e.worker for e in jr.history(k[7])] == [me, "taker"]
    assert jr.pending() == [k[0], k[3], k[4], k[5], k[8], k[9]]
    worker.close()  # twice: harmless
    assert jr.history(k[0])[-1].note == f"released by {me}"
    assert len(jr.history(k[0])) == 2


def test_closing_the_exporting_handle_gives_its_rows_back(csv_path: Path) -> None:
    with _open(csv_path) as journal:
        assert journal.claim(2, lease=LONG) == KEYS[:2]
        journal.record(KEYS[0], "COMPLETED")
    with _open(csv_path) as journal:
        assert journal.pending() == KEYS[1:]
        assert _csv_statuses(journal)[KEYS[1]] == "PENDING"
        assert journal.get(KEYS[0])["STATUS"] == "COMPLETED"  # type: ignore[index]


def test_two_handles_used_from_one_thread_never_act_on_each_others_claims(
    csv_path: Path, jr: Journal, other: Journal
) -> None:
    mine = jr.claim(1, lease=SHORT)
    time.sleep(SHORT + 0.2)
    theirs = other.claim(1, lease=LONG)  # the lapsed row, taken over in the same thread
    assert theirs == mine
    assert jr.extend(mine, LONG) == []  # not ours any more: not renewed
    assert jr.release(mine) == []  # nor given back
    jr.close()  # nor given back at close
    assert other.get(mine[0])["STATUS"] == "IN_PROGRESS"  # type: ignore[index]
    with _open(csv_path, export=False) as third:
        assert mine[0] not in third.claim(len(KEYS), lease=LONG)
    workers = [event.worker for event in other.history(mine[0])]
    assert len(set(workers)) == 2, workers  # the two handles' default names differ


@pytest.mark.parametrize("seconds", [-1.0, math.nan, math.inf, MAX_LEASE_SECONDS + 1])
def test_defer_refuses_seconds_that_are_not_a_back_off(jr: Journal, seconds: float) -> None:
    with pytest.raises(csvjournal.SettingsError, match="defer"):
        jr.defer(KEYS[:1], seconds)
    assert jr.pending() == KEYS


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda j: j.claim(1.5), "n must be an int"),
        (lambda j: j.claim(True), "n must be an int"),
        (lambda j: j.claim(max_attempts=2.0), "max_attempts must be an int"),
        (lambda j: j.claim(worker=123), "worker must be a name"),
        (lambda j: j.claim(worker=""), "worker must be a name"),
        (lambda j: j.extend("k1", 5), "one key"),
        (lambda j: j.release("k1"), "one key"),
        (lambda j: j.defer("k1", 5), "one key"),
        (lambda j: j.retry("k1"), "one key"),
        (lambda j: j.claim(lease="5"), "lease must be a number of seconds, not str"),
        (lambda j: j.extend(["k1"], "5"), "lease must be a number of seconds"),
        (lambda j: j.defer(["k1"], "5"), "seconds must be a number of seconds"),
        (lambda j: j.pending(max_attempts=1.5), "max_attempts must be an int"),
        (lambda j: j.next_lease_end(1.5), "max_attempts must be an int"),
        (lambda j: j.next_lease_end("2"), "max_attempts must be an int"),
        (lambda j: next(j.work(lease="5")), "lease must be a number of seconds"),
    ],
)
def test_arguments_of_the_wrong_kind_are_type_errors_that_change_nothing(
    tmp_path: Path, call: Callable[[Journal], object], match: str
) -> None:
    with csvjournal.open(tmp_path / "small.csv", key="ID") as journal:
        journal.record("k1")
        with pytest.raises(TypeError, match=match):
            call(journal)
        assert journal.pending() == ["k1"]
        assert len(journal.history("k1")) == 1


def test_numpy_numbers_are_numbers(tmp_path: Path) -> None:
    # as a job fed by pandas gives them
    with csvjournal.open(tmp_path / "small.csv", key="ID") as journal:
        for key in ("a", "b", "c"):
            journal.record(key)
        assert journal.claim(np.int64(1), lease=np.int64(60), max_attempts=np.int64(3)) == ["a"]
        assert journal.extend(["a"], np.float64(60)) == ["a"]
        assert journal.defer(["b"], np.int64(5)) == ["b"]
        assert journal.pending(max_attempts=np.int64(3)) == ["c"]


def test_a_huge_count_takes_every_row(tmp_path: Path) -> None:
    with csvjournal.open(tmp_path / "small.csv", key="ID") as journal:
        for key in ("a", "b"):
            journal.record(key)
        assert journal.claim(2**63, max_attempts=2**63) == ["a", "b"]
