"""Leases that run out: reclaims, ``next_lease_end()``, claims after lock waits, ``recover()``."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import _leases
import pytest
from _jobs import open_journal as _open
from _leases import CLOCK_SLACK, KEYS, LONG, SHORT, WAIT
from _leases import csv_statuses as _csv_statuses
from _leases import wait_for as _wait_for

from csvjournal import Journal

# The fixtures of the ten-row CSV and its exporting journal (assigned, not imported by name,
# so that the test parameters naming them do not shadow an import).
csv_path = _leases.csv_path
jr = _leases.jr


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


def test_a_row_set_in_progress_by_hand_during_a_back_off_is_no_lost_lease(jr: Journal) -> None:
    key = KEYS[0]
    jr.record(key, "FAILED")
    assert jr.defer([key], 0) == [key]  # a back-off over at once: no worker holds the row
    jr.record(key, "IN_PROGRESS")  # a script marks it in progress
    assert jr.recover().expired == ()  # no worker named 'None' lost
    assert [event.note for event in jr.history(key)] == [None, None]
    assert jr.claim(1, lease=LONG) == [key]  # claimable, as a row set IN_PROGRESS by hand


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
        # the open did recover()'s work: its report says what the open returned, once
        assert journal.recover().expired == ((KEYS[0], "vanished"), (KEYS[1], "vanished"))
        assert journal.recover().expired == ()
