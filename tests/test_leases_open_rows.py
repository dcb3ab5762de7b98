"""Open rows: ``pending()`` and ``claim()`` agree, and ``free_rows`` lists exactly the free ones."""

from __future__ import annotations

import contextlib
import sqlite3
from contextlib import closing
from pathlib import Path

import _leases
import pytest
from _jobs import open_journal as _open
from _jobs import write_csv as _write_csv
from _leases import KEYS, LONG, SHORT
from _leases import Rollback as _Rollback
from _leases import claims as _claims
from _leases import wait_for as _wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import csvjournal
from csvjournal import Journal

# The fixtures of the ten-row CSV and its exporting journal (assigned, not imported by name,
# so that the test parameters naming them do not shadow an import).
csv_path = _leases.csv_path
jr = _leases.jr


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


def test_back_offs_that_ran_out_are_free_rows_again_after_a_claim(jr: Journal) -> None:
    # found once by a claim, not sorted with the lapsed leases at every claim after
    deferred = KEYS[1::2]
    for key in deferred:
        jr.record(key, "FAILED")
    assert jr.defer(deferred, 0) == deferred  # back-offs over at once
    assert jr.claim(1, lease=LONG) == KEYS[:1]
    with closing(sqlite3.connect(jr.journal_path)) as conn:
        lapsed = conn.execute(
            "SELECT count(*) FROM rows WHERE lease_until IS NOT NULL AND holder IS NULL"
        ).fetchone()[0]
    assert lapsed == 0
    _free_rows_match(jr.journal_path)
    assert jr.claim(len(KEYS), lease=LONG) == KEYS[1:]  # in CSV order, free and deferred
