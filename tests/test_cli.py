"""The command line, through CliRunner and as the installed console script."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

import csvjournal
from csvjournal.cli import cli


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert csvjournal.__version__ in result.output


def test_demo_records_a_job_and_shows_it(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["demo", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    assert "COMPLETED" in result.output
    assert "FAILED" in result.output
    with csvjournal.open(tmp_path / "demo" / "orders.csv") as journal:
        counts = journal.counts()
        assert sum(counts.values()) == 2000
        assert counts["FAILED"] == len([n for n in range(2000) if n % 17 == 0])
        assert journal.pending() == [f"PO-{n:05d}" for n in range(2000) if n % 17 == 0]


def test_demo_run_twice_in_one_folder_starts_afresh(tmp_path: Path) -> None:
    for _ in range(2):
        result = CliRunner().invoke(cli, ["demo", str(tmp_path)])
        assert result.exit_code == 0, result.output
    with csvjournal.open(tmp_path / "orders.csv") as journal:
        assert len(journal) == 2000


def _console_script() -> str:
    beside = Path(sys.executable).parent / "csvjournal"
    return str(beside) if beside.exists() else shutil.which("csvjournal") or "csvjournal"


def test_the_console_script_runs_and_errors_are_one_line(tmp_path: Path) -> None:
    version = subprocess.run(
        [_console_script(), "--version"], capture_output=True, text=True, check=False
    )
    assert version.returncode == 0
    assert csvjournal.__version__ in version.stdout
    (tmp_path / "orders.csv.journal").write_bytes(b"garbage" * 100)
    bad = subprocess.run(
        [_console_script(), "demo", str(tmp_path / "file-not-dir" / "x")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 0  # demo creates missing folders
