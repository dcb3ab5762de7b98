"""What the claim and lease test modules share: the ten-row journal and small helpers.

A module that uses the ``jr`` fixture also takes ``csv_path`` from here (``jr`` opens the
CSV of the ``csv_path`` in scope; the conftest one is only a path, with no CSV written).
"""

from __future__ import annotations

import csv
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _jobs import KEY
from _jobs import open_journal as _open
from _jobs import write_csv as _write_csv

from csvjournal import Journal
from csvjournal.events import Event

# Ten keys whose CSV order is not their sorted order, so "CSV order" is really tested.
KEYS = [f"PO-{n:03d}" for n in random.Random(20261129).sample(range(1000), 10)]
assert sorted(KEYS) != KEYS

LONG = 600.0  # a lease that does not run out during a test
SHORT = 0.5  # a lease that a test waits out
WAIT = 30.0  # generous deadline for anything a test waits for
CLOCK_SLACK = 0.05  # event times are truncated to the millisecond


class Rollback(Exception):
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


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def csv_statuses(journal: Journal) -> dict[str, str]:
    journal.flush(timeout=WAIT)
    with journal.csv_path.open(newline="") as f:
        return {row[KEY]: row["STATUS"] for row in csv.DictReader(f)}


def claims(events: list[Event]) -> list[Event]:
    return [e for e in events if e.status == "IN_PROGRESS"]
