"""The claims a handle knows it holds: kept in the journal's order whatever order the
threads note their commits in, and only what a committed block did."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _leases
import pytest
from _leases import KEYS, LONG
from _leases import Rollback as _Rollback

import csvjournal
from csvjournal import Journal
from csvjournal._heldclaims import ENDED_KEPT, Change, HeldClaims

csv_path = _leases.csv_path
jr = _leases.jr

ME = threading.current_thread()


@pytest.mark.parametrize("end_noted_first", [True, False], ids=["end-first", "claim-first"])
def test_an_end_never_removes_a_claim_the_journal_made_after_it(end_noted_first: bool) -> None:
    # thread A's FAILED (event 11) ends A's claim (event 5); thread B claims the row again
    # at once (event 12): B's claim stands whichever thread notes its commit first
    held = HeldClaims()
    held.note([Change("k", 5, "A", claimed=True, thread=ME)])
    changes = [[Change("k", 11)], [Change("k", 12, "B", claimed=True, thread=ME)]]
    for change in changes if end_noted_first else changes[::-1]:
        held.note(change)
    assert held.every() == [("k", "B")]


def test_a_release_ends_only_its_own_claim_made_before_it() -> None:
    held = HeldClaims()
    held.note([Change("k", 5, "A", claimed=True), Change("k", 6, "B", claimed=True)])
    held.note([Change("k", 7, "A"), Change("k", 4, "B")])  # B's release is of an older claim
    assert held.every() == [("k", "B")]


def _state(journal: Journal, key: str) -> tuple[str, ...]:
    row = journal.get(key)
    assert row is not None
    return (row["STATUS"],)


def test_a_release_in_a_block_that_is_undone_keeps_the_claim(jr: Journal, csv_path: Path) -> None:
    (key,) = jr.claim(1, lease=LONG)
    with pytest.raises(_Rollback), jr.batch():
        assert jr.release([key]) == [key]
        raise _Rollback
    assert _state(jr, key) == ("IN_PROGRESS",)
    assert jr.extend([key], LONG) == [key]  # still held through the handle
    jr.close()  # gives it back
    with csvjournal.open(csv_path, export=False) as journal:
        assert _state(journal, key) == ("PENDING",)


def test_a_claim_in_a_block_after_a_record_that_ended_its_row_stays_held(jr: Journal) -> None:
    with jr.batch():
        (key,) = jr.claim(1, lease=LONG)
        jr.record(key, "FAILED")  # the first row again: FAILED is not done
        assert jr.claim(1, lease=LONG) == [key]
    assert jr.extend([key], LONG) == [key]
    assert jr.release([key]) == [key]
    assert _state(jr, key) == ("PENDING",)


def test_claims_in_a_block_that_is_undone_are_not_held(jr: Journal) -> None:
    with pytest.raises(_Rollback), jr.batch():
        assert jr.claim(2, lease=LONG) == KEYS[:2]
        raise _Rollback
    assert jr.extend(KEYS[:2], LONG) == []
    assert jr.pending()[:2] == KEYS[:2]


def test_rows_claimed_in_a_block_are_held_inside_it(jr: Journal) -> None:
    with jr.batch():
        keys = jr.claim(3, lease=LONG)
        assert jr.extend(keys, LONG) == keys
        with jr.batch():  # a nested block that commits
            assert jr.release(keys[1:]) == keys[1:]
    assert [_state(jr, key) for key in keys] == [("IN_PROGRESS",), ("PENDING",), ("PENDING",)]
    assert jr.extend(keys, LONG) == keys[:1]


def test_close_gives_back_a_claim_another_threads_block_holds(jr: Journal, csv_path: Path) -> None:
    claimed, go_on = threading.Event(), threading.Event()

    def worker() -> None:
        with jr.batch():
            jr.claim(1, lease=LONG)
            claimed.set()
            go_on.wait(10)

    thread = threading.Thread(target=worker)
    thread.start()
    assert claimed.wait(10)
    go_on.set()
    jr.close()  # waits for the block, then gives its row back
    thread.join()
    with csvjournal.open(csv_path, export=False) as journal:
        assert _state(journal, KEYS[0]) == ("PENDING",)


@pytest.mark.parametrize("ender", ["claimer", "other-thread"])
def test_a_thread_whose_claim_ended_never_acts_on_another_threads_new_claim(
    jr: Journal, ender: str
) -> None:
    # A's claim ends (FAILED, which offers the row again), B claims the row at once: A's
    # late release()/extend() must leave B's claim alone, not fall back to it
    with ThreadPoolExecutor(1) as a, ThreadPoolExecutor(1) as b, ThreadPoolExecutor(1) as c:
        (key,) = a.submit(jr.claim, 1, lease=LONG).result()
        by = a if ender == "claimer" else c
        by.submit(jr.record, key, "FAILED").result()
        assert b.submit(jr.claim, 1, lease=LONG).result() == [key]
        assert a.submit(jr.release, [key]).result() == []
        assert a.submit(jr.extend, [key], LONG).result() == []
        assert _state(jr, key) == ("IN_PROGRESS",)
        # a thread that never claimed the row acts on its newest claim, as before
        assert jr.extend([key], LONG) == [key]
        assert b.submit(jr.release, [key]).result() == [key]
        # A claims it again: its own claim again
        assert a.submit(jr.claim, 1, lease=LONG).result() == [key]
        assert a.submit(jr.release, [key]).result() == [key]
    assert _state(jr, key) == ("PENDING",)


def test_a_thread_remembers_a_bounded_number_of_ended_claims() -> None:
    held = HeldClaims()
    keys = [f"k{n}" for n in range(ENDED_KEPT + 1)]
    held.note(Change(key, n, "A", claimed=True, thread=ME) for n, key in enumerate(keys))
    held.note(Change(key, len(keys) + n) for n, key in enumerate(keys))
    other = threading.Thread()
    held.note(Change(key, 2 * len(keys) + n, "B", True, other) for n, key in enumerate(keys))
    # the oldest ended claim is forgotten (the newest claim again); the rest stay ended
    assert held.holders(keys[:2], None, ME) == [(keys[0], "B")]
    assert held.holders(keys[-1:], None, ME) == []
    assert held.holders(keys[:1], None, other) == [(keys[0], "B")]


def test_a_claim_undone_with_its_block_gives_the_earlier_claim_back(
    jr: Journal, csv_path: Path
) -> None:
    # the row's lease lapsed, the same worker claimed it again in a block that is undone:
    # the journal holds the first claim still, and so must the handle
    (key,) = jr.claim(1, lease=0.001, worker="w")
    time.sleep(0.02)
    with pytest.raises(_Rollback), jr.batch():
        assert jr.claim(1, lease=LONG, worker="w") == [key]
        raise _Rollback
    assert _state(jr, key) == ("IN_PROGRESS",)
    assert jr.extend([key], LONG) == [key]
    jr.close()  # gives it back
    with csvjournal.open(csv_path, export=False) as journal:
        assert _state(journal, key) == ("PENDING",)
        assert journal.history(key)[-1].note.startswith("released by")  # type: ignore[union-attr]
