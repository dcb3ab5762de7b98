"""Recovery and the CSV: leftover temporary export files, and a stale or deleted CSV."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _recovery import csv_status as _csv_status

import csvjournal
from csvjournal.csvio import temp_prefix
from csvjournal.progress import progress

# -- 2. leftover temporary files ---------------------------------------------------------


def _leftover(csv_path: Path, name: str = "killed1") -> Path:
    path = csv_path.parent / f"{temp_prefix(csv_path)}{name}"
    path.write_bytes(b"ID,STATUS\nhalf an expo")
    return path


def test_recover_removes_leftover_temp_files_when_no_exporter_is_alive(csv_path: Path) -> None:
    csvjournal.open(csv_path, key="ID").close()
    with csvjournal.open(csv_path, export=False) as journal:
        leftovers = [_leftover(csv_path, "a1"), _leftover(csv_path, "b2")]
        unrelated = csv_path.parent / "orders.csv.tmp"  # not ours: left alone
        unrelated.write_bytes(b"x")
        report = journal.recover()
        assert sorted(report.temp_files_removed) == sorted(leftovers)
        assert not any(path.exists() for path in leftovers)
        assert unrelated.exists()
        assert "temporary files removed: 2" in report.lines()
        assert journal.recover().temp_files_removed == ()


def test_recover_leaves_temp_files_to_a_live_exporter(csv_path: Path) -> None:
    # A temp file beside the CSV may be the live exporter's export in progress.
    with csvjournal.open(csv_path, key="ID") as exporter:
        exporter.record("a", "COMPLETED")
        with csvjournal.open(csv_path, export=False) as journal:
            leftover = _leftover(csv_path)
            report = journal.recover()
            assert report.temp_files_removed == ()
            assert leftover.exists()
            assert _csv_status(csv_path) == {"a": "COMPLETED"}
    leftover.unlink()


def test_an_exporting_open_removes_leftover_temp_files_and_recover_reports_them(
    csv_path: Path,
) -> None:
    csvjournal.open(csv_path, key="ID").close()
    leftover = _leftover(csv_path)
    with csvjournal.open(csv_path) as journal:
        assert not leftover.exists()
        assert journal.recover().temp_files_removed == (leftover,)
    assert sorted(p.name for p in csv_path.parent.iterdir()) == [
        "orders.csv",
        "orders.csv.backups",
        "orders.csv.journal",
    ]


# -- 2. a stale CSV ----------------------------------------------------------------------


def test_recover_regenerates_a_stale_csv_and_only_then(csv_path: Path) -> None:
    csvjournal.open(csv_path, key="ID").close()
    with csvjournal.open(csv_path, export=False) as journal:  # nobody exports
        journal.record("a", "COMPLETED")
        journal.record("b", "FAILED")
        assert _csv_status(csv_path) == {}
        report = journal.recover()
        assert report.csv_was_stale
        assert "CSV: regenerated" in report.lines()
        assert _csv_status(csv_path) == {"a": "COMPLETED", "b": "FAILED"}
        assert report.pending == 1

        before = csv_path.read_bytes()
        inode = csv_path.stat().st_ino
        report = journal.recover()
        assert not report.csv_was_stale
        assert "CSV: already current" in report.lines()
        assert csv_path.read_bytes() == before
        assert csv_path.stat().st_ino == inode  # not even rewritten


@pytest.mark.parametrize("export", [True, False], ids=["exporting", "non-exporting"])
def test_the_first_recover_after_an_open_reports_the_stale_csv_the_open_rewrote(
    csv_path: Path, export: bool
) -> None:
    csvjournal.open(csv_path, key="ID").close()
    with csvjournal.open(csv_path, export=False) as journal:  # as a job killed before export
        journal.record("a", "COMPLETED")
    assert _csv_status(csv_path) == {}
    with csvjournal.open(csv_path, export=export) as journal:
        report = journal.recover()
        assert report.csv_was_stale
        assert "CSV: regenerated" in report.lines()
        assert _csv_status(csv_path) == {"a": "COMPLETED"}
        assert not journal.recover().csv_was_stale  # said once


def test_a_recover_right_after_a_journal_is_made_finds_its_csv_current(csv_path: Path) -> None:
    csv_path.write_text("ID\na\n")
    with csvjournal.open(csv_path, key="ID") as journal:
        assert not journal.recover().csv_was_stale


_KILLED_BEFORE_FIRST_EXPORT = """
import os, signal, sys
import csvjournal, csvjournal._export as export
export.write_temp = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
csvjournal.open(sys.argv[1], key="ID")
"""


@pytest.mark.slow
@pytest.mark.parametrize("then", ["recover", "flush"])
def test_a_csv_never_written_from_its_journal_is_stale_without_any_record(
    csv_path: Path, then: str
) -> None:
    # An init killed after its import committed, before its first export: the journal has
    # no event yet, the CSV no status columns; "current" by sequence numbers alone.
    csv_path.write_text("ID,NAME\n1,a\n")
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_BEFORE_FIRST_EXPORT, str(csv_path)],
        check=False,
        capture_output=True,
        timeout=60,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert csv_path.read_text() == "ID,NAME\n1,a\n"
    with csvjournal.open(csv_path, export=False) as journal:
        assert not progress(journal).csv_current
        if then == "recover":
            report = journal.recover()
            assert report.csv_was_stale
            assert "CSV: regenerated" in report.lines()
        else:
            journal.flush(timeout=30)
    assert csv_path.read_text() == "ID,NAME,STATUS,LAST_PROCESSED\n1,a,PENDING,\n"


def test_recover_on_the_exporter_after_flush_finds_the_csv_current(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a", "COMPLETED")
        journal.flush(timeout=30)
        report = journal.recover()
        assert not report.csv_was_stale
        assert report.pending == 0
        assert report.expired == ()


@pytest.mark.parametrize("export", [True, False], ids=["exporting", "non-exporting"])
def test_recover_writes_a_deleted_csv_anew(csv_path: Path, export: bool) -> None:
    csvjournal.open(csv_path, key="ID").close()
    with csvjournal.open(csv_path, export=export) as journal:
        journal.record("a", "COMPLETED")
        journal.flush(timeout=30)
        csv_path.unlink()
        report = journal.recover()
        assert csv_path.exists(), "recover() left the CSV missing"
        assert _csv_status(csv_path) == {"a": "COMPLETED"}
        # An exporter thread notices a deleted CSV within a poll: it may have written it
        # before recover() looked.
        assert report.csv_was_stale or export


@pytest.mark.parametrize("export", [True, False], ids=["exporting", "non-exporting"])
def test_flush_writes_a_deleted_csv_anew(csv_path: Path, export: bool) -> None:
    csvjournal.open(csv_path, key="ID").close()
    with csvjournal.open(csv_path, export=export) as journal:
        journal.record("a", "COMPLETED")
        journal.flush(timeout=30)
        for _ in range(20):  # the exporter thread may notice first: either way, flush waits
            csv_path.unlink()
            journal.flush(timeout=30)
            assert csv_path.exists(), "flush() returned with the CSV missing"
            assert _csv_status(csv_path) == {"a": "COMPLETED"}
