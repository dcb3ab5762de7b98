"""How far a job is: the rate and ETA count rows finished, whatever the clock says."""

from __future__ import annotations

import time
import types
from pathlib import Path

import pytest

import csvjournal
from csvjournal import progress as progress_module
from csvjournal.progress import progress


def test_further_records_on_finished_rows_do_not_count_as_rows_finished(
    csv_path: Path,
) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        for n in range(20):
            journal.record(f"k{n}")
        started = time.time()
        for n in range(10):
            journal.record(f"k{n}", "COMPLETED")
        before = progress(journal)
        for round_ in range(5):
            for n in range(10):
                journal.record(f"k{n}", NOTE=f"note {round_}")  # no row finishes
        after = progress(journal)
    assert before.done == after.done == 10
    assert before.rate is not None
    assert after.rate is not None
    assert after.rate <= before.rate  # the same 10 rows, over a little more time
    assert after.rate <= 10 / max(1.0, time.time() - started) * 1.01


def test_a_clock_behind_the_events_gives_a_sane_rate_and_age(
    csv_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        for n in range(30):
            journal.record(f"k{n}", "COMPLETED")
        honest = progress(journal)
        behind = types.SimpleNamespace(time=lambda: time.time() - 3600)  # set back an hour
        monkeypatch.setattr(progress_module, "time", behind)
        skewed = progress(journal)
    assert honest.rate is not None
    assert skewed.rate is not None
    assert skewed.rate <= honest.rate * 1.5  # not "30 rows in a second"
    assert skewed.csv_age_seconds is not None
    assert skewed.csv_age_seconds >= 0
