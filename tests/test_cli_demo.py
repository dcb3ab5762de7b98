"""The demo's choice of a moment to kill its worker: one at which the worker holds a row
with an attempt left, so that another worker takes the row over as the demo says."""

from __future__ import annotations

import multiprocessing
import signal
import time
from pathlib import Path

import pytest

import csvjournal
from csvjournal.cli import _demo

READY_TIMEOUT = 60.0


def _victim(csv: str, failures: int, ready: str) -> None:
    """A worker ``demo-2`` that fails its row ``failures`` times, then holds it."""
    with csvjournal.open(csv) as journal:
        for task in journal.work(lease=60, worker="demo-2", max_attempts=_demo.MAX_ATTEMPTS):
            with task:
                if failures:
                    failures -= 1
                    raise LookupError("not yet")
                Path(ready).touch()
                time.sleep(120)


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.mark.parametrize(("failures", "expected"), [(0, ["PO-1"]), (_demo.MAX_ATTEMPTS - 1, [])])
def test_the_demo_stops_its_worker_only_while_it_holds_a_row_with_an_attempt_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failures: int, expected: list[str]
) -> None:
    csv = tmp_path / "orders.csv"
    csv.write_text("PO_NUMBER,STATUS\nPO-1,\n")
    ready = tmp_path / "ready"
    monkeypatch.setattr(_demo, "_LOOK_SECONDS", 1.0)
    with csvjournal.open(csv, key="PO_NUMBER") as journal:
        ctx = multiprocessing.get_context("spawn")
        victim = ctx.Process(target=_victim, args=(str(csv), failures, str(ready)), name="demo-2")
        victim.start()
        try:
            deadline = time.monotonic() + READY_TIMEOUT
            while not ready.exists():
                assert time.monotonic() < deadline
                assert victim.is_alive()
                time.sleep(0.02)
            # the row held on its last attempt: killed then, it would be spent, so no
            # moment comes, and no stale list of rows is returned
            assert _demo._stop_holding(victim, journal) == expected
            deadline = time.monotonic() + READY_TIMEOUT  # (a signal is delivered, not done)
            while _state(victim.pid or 0) != "T":  # stopped, for the demo's kill -9
                assert time.monotonic() < deadline
                time.sleep(0.01)
        finally:
            victim.kill()
            victim.join()
    assert victim.exitcode == -signal.SIGKILL
