"""Claims and leases: claim, extend, release, expiry, close, and many claimers at once.

The unit tests use one process (and a second handle where another worker is needed). The
slow tests run real worker processes (a script written into ``tmp_path``) that claim rows
one at a time from one journal; some are killed with SIGKILL while they hold rows. Every
claim is proven from the audit trail: ``history()`` must show each row claimed exactly once
while its lease lived, and every reclaim after the lost lease ran out, naming the lost worker.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from itertools import pairwise
from pathlib import Path

import pytest
from _jobs import KEY, TERMINAL
from _jobs import open_journal as _open
from _jobs import write_csv as _write_csv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import csvjournal
from csvjournal import Journal
from csvjournal.events import Event

# Ten keys whose CSV order is not their sorted order, so "CSV order" is really tested.
KEYS = [f"PO-{n:03d}" for n in random.Random(20261129).sample(range(1000), 10)]
assert sorted(KEYS) != KEYS

LONG = 600.0  # a lease that does not run out during a test
SHORT = 0.5  # a lease that a test waits out
WAIT = 30.0  # generous deadline for anything a test waits for
CLOCK_SLACK = 0.05  # event times are truncated to the millisecond


class _Rollback(Exception):
    pass


@pytest.fixture
def csv_path(tmp_path: Path) -> Path:
    path = tmp_path / "orders.csv"
    _write_csv(path, KEYS)
    return path


@pytest.fixture
def jr(csv_path: Path) -> Iterator[Journal]:
    """The exporting journal of a ten-row CSV, all rows PENDING."""
    with _open(csv_path) as journal:
        yield journal


@pytest.fixture
def other(csv_path: Path, jr: Journal) -> Iterator[Journal]:
    """A second, non-exporting handle on the same journal (another worker)."""
    with _open(csv_path, export=False) as journal:
        yield journal


def _wait_for(what: str, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _csv_statuses(journal: Journal) -> dict[str, str]:
    journal.flush(timeout=WAIT)
    with journal.csv_path.open(newline="") as f:
        return {row[KEY]: row["STATUS"] for row in csv.DictReader(f)}


def _statuses(journal: Journal) -> dict[str, str]:
    return {key: journal.get(key)["STATUS"] for key in KEYS}  # type: ignore[index]


def _me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"


def _claims(events: list[Event]) -> list[Event]:
    return [e for e in events if e.status == "IN_PROGRESS"]


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
    ("n", "lease"), [(0, 10.0), (-1, 10.0), (1, 0.0), (1, -5.0), (1, math.nan), (0, 0.0)]
)
def test_claim_refuses_bad_arguments_and_changes_nothing(jr: Journal, n: int, lease: float) -> None:
    with pytest.raises(ValueError, match="claim"):
        jr.claim(n, lease=lease)
    assert jr.pending() == KEYS
    assert jr.counts() == {"PENDING": len(KEYS)}
    assert all(jr.history(key) == [] for key in KEYS)


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


def test_pending_and_claim_agree_on_every_kind_of_row(jr: Journal) -> None:
    k = KEYS
    assert jr.claim(2, lease=LONG, worker="first") == k[:2]
    assert jr.claim(1, lease=LONG, worker="busy") == k[2:3]  # held by a live lease
    assert jr.claim(1, lease=SHORT, worker="gone") == k[3:4]  # its lease will run out
    assert jr.claim(1, lease=LONG) == k[4:5]
    jr.record(k[0], "COMPLETED")  # terminal: done
    jr.record(k[1], "FAILED")  # not terminal: pending
    jr.release([k[4]])
    jr.record(k[5], "IN_PROGRESS")  # IN_PROGRESS without a lease: pending
    jr.record(k[6], "NO_ATTACHMENTS")  # terminal
    _wait_for("the short lease to run out", lambda: k[3] in jr.pending())

    expected = [k[1], k[3], k[4], k[5], k[7], k[8], k[9]]
    assert jr.pending() == expected
    with pytest.raises(_Rollback), jr.batch():
        assert jr.claim(100, lease=LONG) == expected
        assert jr.pending() == []
        raise _Rollback
    assert jr.pending() == expected
    assert jr.claim(100, lease=LONG) == expected
    assert jr.pending() == []
    assert jr.get(k[2])["STATUS"] == "IN_PROGRESS"  # type: ignore[index]
    assert [e.worker for e in _claims(jr.history(k[2]))] == ["busy"]


# Everything that takes a row or gives it back, with keys and numbers drawn from the ten rows.
_STATUSES = [None, "PENDING", "FAILED", "IN_PROGRESS", "COMPLETED", "NO_ATTACHMENTS"]
_BATCH_STEPS = st.one_of(
    st.tuples(st.just("record"), st.integers(0, 9), st.sampled_from(_STATUSES)),
    st.tuples(st.just("claim"), st.integers(1, 4), st.sampled_from([LONG, 0.001])),
    st.tuples(st.just("claim_limited"), st.integers(1, 4), st.integers(1, 2)),
    st.tuples(st.just("release"), st.integers(0, 9), st.none()),
    st.tuples(st.just("defer"), st.integers(0, 9), st.sampled_from([0.0, LONG])),
    st.tuples(st.just("retry"), st.integers(0, 9), st.none()),
    st.tuples(st.just("extend"), st.integers(0, 9), st.none()),
    st.tuples(st.just("new_row"), st.integers(0, 10**6), st.none()),
)
_STEPS = _BATCH_STEPS | st.tuples(st.just("recover"), st.none(), st.none())  # not in a batch


def _step(journal: Journal, step: tuple[str, object, object]) -> None:
    what, a, b = step
    key = KEYS[a] if isinstance(a, int) and a < len(KEYS) else None
    if what == "record":
        journal.record(key, b)
    elif what == "claim":
        journal.claim(a, lease=b)  # type: ignore[arg-type]
    elif what == "claim_limited":
        journal.claim(a, lease=LONG, max_attempts=b)  # type: ignore[arg-type]
    elif what == "release":
        journal.release([key])  # type: ignore[list-item]
    elif what == "defer":
        journal.defer([key], b)  # type: ignore[list-item, arg-type]
    elif what == "retry":
        journal.retry([key])  # type: ignore[list-item]
    elif what == "extend":
        journal.extend([key], LONG)  # type: ignore[list-item]
    elif what == "recover":
        journal.recover()
    else:
        journal.record(f"NEW-{a}")


def _free_rows_match(journal_path: Path) -> None:
    with closing(sqlite3.connect(journal_path)) as conn:
        listed = conn.execute("SELECT pos, key, attempts FROM free_rows ORDER BY pos").fetchall()
        free = conn.execute(
            "SELECT pos, key, attempts FROM rows"
            " WHERE done = 0 AND lease_until IS NULL ORDER BY pos"
        ).fetchall()
    assert listed == free


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(_STEPS, max_size=25), rolled_back=st.lists(_BATCH_STEPS, max_size=6))
def test_free_rows_lists_exactly_the_rows_neither_done_nor_leased(
    tmp_path_factory: pytest.TempPathFactory,
    steps: list[tuple[str, object, object]],
    rolled_back: list[tuple[str, object, object]],
) -> None:
    # Claims and pending() read free_rows, which triggers keep; after any mix of takes and
    # give-backs, batches undone, and a reopen with other terminal statuses, it is exact.
    csv_path = tmp_path_factory.mktemp("free") / "orders.csv"
    _write_csv(csv_path, KEYS)
    with _open(csv_path, export=False) as journal:
        for step in steps:
            _step(journal, step)
        with contextlib.suppress(_Rollback), journal.batch():
            for step in rolled_back:
                _step(journal, step)
            raise _Rollback
        _free_rows_match(journal.journal_path)
        expected = journal.pending()
    _free_rows_match(Path(f"{csv_path}.journal"))  # close gave the held rows back
    with csvjournal.open(csv_path, terminal={"COMPLETED"}, export=False) as journal:
        _free_rows_match(journal.journal_path)  # NO_ATTACHMENTS rows are open again
        assert set(expected) <= set(journal.pending())


def test_a_row_whose_lease_ran_out_is_pending_again_and_reclaimed(jr: Journal) -> None:
    lease = 1.0
    assert jr.claim(1, lease=lease, worker="lost-worker") == KEYS[:1]
    assert KEYS[0] not in jr.pending()  # just after the claim: the lease lives
    assert jr.claim(1, lease=LONG, worker="busy") == KEYS[1:2]
    _wait_for("the lease to run out", lambda: KEYS[0] in jr.pending())
    assert KEYS[1] not in jr.pending()
    assert jr.get(KEYS[0])["STATUS"] == "IN_PROGRESS"  # nobody returned it yet  # type: ignore[index]

    assert jr.claim(1, lease=LONG, worker="next") == KEYS[:1]
    assert KEYS[0] not in jr.pending()
    lost, reclaimed = jr.history(KEYS[0])
    assert (lost.status, lost.worker, lost.note) == ("IN_PROGRESS", "lost-worker", None)
    assert (reclaimed.status, reclaimed.worker) == ("IN_PROGRESS", "next")
    assert reclaimed.note == "lease of lost-worker expired"
    assert (reclaimed.at - lost.at).total_seconds() >= lease - CLOCK_SLACK


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


def test_close_gives_held_rows_back_and_leaves_recorded_rows_alone(
    csv_path: Path, jr: Journal
) -> None:
    k = KEYS
    worker = _open(csv_path, export=False)
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
        assert jr.history(key)[-1].note == f"released by {_me()}"
    for key in (k[1], k[2], k[3]):  # recorded: nothing given back
        assert [e.note for e in jr.history(key)] == [None, None]
    assert [e.worker for e in jr.history(k[6])] == ["parent"]
    assert [e.worker for e in jr.history(k[7])] == [_me(), "taker"]
    assert jr.pending() == [k[0], k[3], k[4], k[5], k[8], k[9]]
    worker.close()  # twice: harmless
    assert jr.history(k[0])[-1].note == f"released by {_me()}"
    assert len(jr.history(k[0])) == 2


def test_closing_the_exporting_handle_gives_its_rows_back(csv_path: Path) -> None:
    with _open(csv_path) as journal:
        assert journal.claim(2, lease=LONG) == KEYS[:2]
        journal.record(KEYS[0], "COMPLETED")
    with _open(csv_path) as journal:
        assert journal.pending() == KEYS[1:]
        assert _csv_statuses(journal)[KEYS[1]] == "PENDING"
        assert journal.get(KEYS[0])["STATUS"] == "COMPLETED"  # type: ignore[index]


# -- next_lease_end, lock waits, recovery ---------------------------------------------------


def test_next_lease_end(jr: Journal) -> None:
    assert jr.next_lease_end() is None
    before = time.time()
    assert jr.claim(1, lease=50.0, worker="a") == KEYS[:1]
    assert jr.claim(1, lease=40.0, worker="b") == KEYS[1:2]
    after = time.time()
    end = jr.next_lease_end()
    assert end is not None
    assert before + 40.0 <= end <= after + 40.0
    # A row at its last attempt cannot be claimed again when it is lost: not waited for.
    assert jr.next_lease_end(max_attempts=1) is None
    assert jr.next_lease_end(max_attempts=2) == end
    jr.record(KEYS[1], "COMPLETED")
    later = jr.next_lease_end()
    assert later is not None
    assert before + 50.0 <= later <= after + 50.0


def _hold_write_lock(journal_path: Path, seconds: float) -> threading.Thread:
    """Hold the journal's write lock from a plain SQLite connection for ``seconds``."""
    conn = sqlite3.connect(journal_path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")

    def release() -> None:
        time.sleep(seconds)
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=release)
    thread.start()
    return thread


def test_a_claim_that_waited_for_the_write_lock_still_gets_its_whole_lease(
    jr: Journal,
) -> None:
    jr.pending()
    holder = _hold_write_lock(jr.journal_path, 3.0)
    keys = jr.claim(1, lease=2.0)  # waits about 3 s for the lock
    returned = time.time()
    holder.join(WAIT)
    assert keys == KEYS[:1]
    end = jr.next_lease_end()
    assert end is not None, "the lease had run out before claim() returned"
    assert end >= returned + 1.0
    assert KEYS[0] not in jr.pending()


def test_a_claim_that_waited_for_the_write_lock_sees_leases_that_ran_out(jr: Journal) -> None:
    for key in KEYS[1:]:
        jr.record(key, "COMPLETED")
    assert jr.claim(1, lease=SHORT, worker="lost-worker") == KEYS[:1]
    holder = _hold_write_lock(jr.journal_path, SHORT + 1.0)
    keys = jr.claim(1, lease=LONG, worker="next")  # the lease runs out while it waits
    holder.join(WAIT)
    assert keys == KEYS[:1]
    assert jr.history(KEYS[0])[-1].note == "lease of lost-worker expired"


CLAIM_AND_VANISH = """\
import os
import sys

import structlog

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
import csvjournal

journal = csvjournal.open(sys.argv[1], export=False)
print(journal.claim(int(sys.argv[2]), lease=float(sys.argv[3]), worker="vanished"),
      file=sys.stderr)
os._exit(0)  # no close(), no atexit: the claims stay behind as if the process were killed
"""


def _claim_and_vanish(tmp_path: Path, csv_path: Path, n: int, lease: float) -> None:
    script = tmp_path / "claim_and_vanish.py"
    script.write_text(CLAIM_AND_VANISH)
    done = subprocess.run(
        [sys.executable, str(script), str(csv_path), str(n), str(lease)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()


@pytest.mark.slow
def test_recover_returns_expired_leases_naming_the_lost_worker(
    tmp_path: Path, csv_path: Path, jr: Journal
) -> None:
    assert jr.claim(1, lease=LONG, worker="alive") == KEYS[:1]
    _claim_and_vanish(tmp_path, csv_path, 3, SHORT)
    _wait_for("the leases to run out", lambda: jr.pending()[:3] == KEYS[1:4])
    assert jr.counts()["IN_PROGRESS"] == 4

    report = jr.recover()
    assert report.expired == tuple((key, "vanished") for key in KEYS[1:4])
    assert jr.counts() == {"PENDING": len(KEYS) - 1, "IN_PROGRESS": 1}
    for key in KEYS[1:4]:
        claim, expiry = jr.history(key)
        assert (claim.worker, expiry.status) == ("vanished", "PENDING")
        assert expiry.note == "lease of vanished expired"
        assert (expiry.at - claim.at).total_seconds() >= SHORT - CLOCK_SLACK
    assert _csv_statuses(jr)[KEYS[1]] == "PENDING"
    assert jr.recover().expired == ()


@pytest.mark.slow
def test_an_exporting_open_returns_expired_leases(tmp_path: Path, csv_path: Path) -> None:
    _open(csv_path).close()
    _claim_and_vanish(tmp_path, csv_path, 2, SHORT)
    time.sleep(SHORT + 0.1)
    with _open(csv_path) as journal:
        assert journal.counts() == {"PENDING": len(KEYS)}
        assert [e.note for e in journal.history(KEYS[1])] == [
            None,
            "lease of vanished expired",
        ]


# -- many claimers: processes and threads ----------------------------------------------------

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
