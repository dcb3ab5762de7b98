"""A journal read by a user who may not write it (an operator looking at another account's
job): nothing of the visit stays behind, and the job's owner records on."""

from __future__ import annotations

import ast
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import csvjournal
from csvjournal.cli import cli

NOBODY = 65534


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder every user may write (a team's share); pytest's own is its owner's only."""
    if os.geteuid() != 0:
        pytest.skip("acting as a second user needs root, which this machine's tests lack")
    folder = Path(tempfile.mkdtemp(prefix="csvjournal-shared-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder)


def _as_nobody(work: str, csv_path: Path) -> tuple[int, str]:
    """Run ``work`` ("pending" or "status") on ``csv_path`` in a child process of user
    nobody (forked: the modules it needs are loaded already); its exit status and what it
    found."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            if work.startswith("cli "):
                result = CliRunner().invoke(cli, [work[4:], str(csv_path), "--json"])
                found: object = result.exit_code, result.output
            else:
                with csvjournal.open(csv_path, export=False) as journal:
                    found = journal.pending() if work == "pending" else journal.counts()
            os.write(write, repr(found).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        said = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), said


@pytest.mark.parametrize("work", ["pending", "status", "cli pending", "cli status"])
def test_a_reader_who_may_not_write_the_journal_leaves_nothing_behind(
    shared_folder: Path, work: str
) -> None:
    csv_path = shared_folder / "orders.csv"
    csv_path.write_text("ID\na\nb\n")
    with csvjournal.open(csv_path, key="ID") as journal:  # the owner's job (root's, here)
        journal.record("a", "COMPLETED")
        expected = journal.pending() if work == "pending" else journal.counts()
        CliRunner().invoke(cli, ["status", str(csv_path)])  # every module loaded before the fork
    before = sorted(path.name for path in shared_folder.iterdir())
    code, found = _as_nobody(work, csv_path)
    assert code == 0
    if work.startswith("cli "):
        exit_code, output = ast.literal_eval(found)
        assert exit_code == 0, output
        shown = json.loads(output)
        if work == "cli status":
            assert (shown["counts"], shown["pending"]) == ({"COMPLETED": 1, "PENDING": 1}, 1)
        else:
            assert shown["pending"] == ["b"]
    else:
        assert found == repr(expected)
    assert sorted(path.name for path in shared_folder.iterdir()) == before  # no -wal, -shm
    with csvjournal.open(csv_path) as journal:  # the owner records on
        journal.record("b", "COMPLETED")
    assert "b,COMPLETED" in csv_path.read_text()


def test_a_reader_leaves_the_files_of_a_journal_in_use_alone(shared_folder: Path) -> None:
    csv_path = shared_folder / "orders.csv"
    csv_path.write_text("ID\na\nb\n")
    with csvjournal.open(csv_path, key="ID") as journal:  # open: its -wal and -shm exist
        journal.record("a", "COMPLETED")
        code, found = _as_nobody("pending", csv_path)
        assert (code, found) == (0, repr(["b"]))
        assert Path(f"{journal.journal_path}-shm").exists()
        journal.record("b", "COMPLETED")
    assert "b,COMPLETED" in csv_path.read_text()
