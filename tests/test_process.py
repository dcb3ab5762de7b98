"""The notes of running commands that let a run stop what a killed run left running."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _cli import wait_for

from csvjournal._pids import start_ticks
from csvjournal._process import note_running, stop_leftovers

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(),
    reason="no /proc: only there does a process's start time tell it from a later one",
)


@pytest.fixture(name="command")
def command_fixture() -> Iterator[subprocess.Popen[bytes]]:
    """A command as run starts one: asleep, in a session of its own."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
    )
    yield child
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()


def _dead_pid() -> int:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return gone.pid


def _as_if_run_by(note: Path, run_pid: int, ticks: int | None = None) -> Path:
    moved = note.with_name(f"{run_pid}-{note.name.split('-')[1]}")
    note.rename(moved)
    if ticks is not None:
        moved.write_text(str(ticks), encoding="ascii")
    return moved


def test_the_commands_of_a_live_run_are_left_alone(
    tmp_path: Path, command: subprocess.Popen[bytes]
) -> None:
    note = note_running(tmp_path / "running", command)
    assert note is not None
    assert note.name == f"{os.getpid()}-{command.pid}"
    assert stop_leftovers(tmp_path / "running") == []
    assert note.exists()
    assert command.poll() is None


def test_a_dead_run_s_command_is_stopped_and_its_note_removed(
    tmp_path: Path, command: subprocess.Popen[bytes]
) -> None:
    note = note_running(tmp_path / "running", command)
    assert note is not None
    note = _as_if_run_by(note, _dead_pid())
    assert stop_leftovers(tmp_path / "running") == [command.pid]
    wait_for(lambda: command.poll() is not None, timeout=10)
    assert not note.exists()


def test_a_process_given_the_noted_number_later_is_not_stopped(
    tmp_path: Path, command: subprocess.Popen[bytes]
) -> None:
    note = note_running(tmp_path / "running", command)
    assert note is not None
    ticks = start_ticks(command.pid)
    assert ticks is not None
    note = _as_if_run_by(note, _dead_pid(), ticks - 1)  # started at another moment
    assert stop_leftovers(tmp_path / "running") == []
    assert command.poll() is None
    assert not note.exists()  # its run is gone: nothing of it is left to stop


def test_names_not_of_a_note_are_ignored_and_no_folder_is_nothing_to_stop(
    tmp_path: Path,
) -> None:
    assert stop_leftovers(tmp_path / "missing") == []
    folder = tmp_path / "running"
    folder.mkdir()
    (folder / "notes.txt").write_text("x")
    (folder / f"{_dead_pid()}-x").write_text("1")
    assert stop_leftovers(folder) == []
    assert len(list(folder.iterdir())) == 2
