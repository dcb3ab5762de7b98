"""What the work() test modules share: the five-row journal and small helpers.

A module that uses the ``jr`` fixture also takes ``csv_path`` from here (``jr`` opens the
CSV of the ``csv_path`` in scope; the conftest one is only a path, with no CSV written).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _jobs import open_journal as _open
from _jobs import write_csv as _write_csv

from csvjournal import Journal

KEYS = ["W-7", "W-3", "W-9", "W-1", "W-5"]  # CSV order, not sorted order

LONG = 600.0  # a lease that does not run out during a test
WAIT = 30.0  # generous deadline for anything a test waits for


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


def me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"


def trail(journal: Journal, key: str) -> list[tuple[str, str | None]]:
    return [(e.status, e.note) for e in journal.history(key)]


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def finish_all_but_first(journal: Journal) -> None:
    for key in KEYS[1:]:
        journal.record(key, "COMPLETED")
