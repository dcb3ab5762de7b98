"""The mark in a command's environment that lets a run stop what a killed run left running."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _cli import wait_for

import csvjournal
from csvjournal import _flush
from csvjournal._atomicfile import remove_temp_files, temp_prefix
from csvjournal._oslock import exporter
from csvjournal._pids import pid_namespace, start_ticks
from csvjournal._process import RUN_VARIABLE, run_mark, stop_leftovers

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/environ").exists(),
    reason="no /proc: only there does a process's start time tell it from a later one",
)

Command = Callable[[str | None], subprocess.Popen[bytes]]


@pytest.fixture(name="command")
def command_fixture() -> Iterator[Command]:
    """Start a command as run starts one (asleep, in a session of its own), with ``mark``
    as its ``CSVJOURNAL_RUN``."""
    started: list[subprocess.Popen[bytes]] = []

    def start(mark: str | None) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if k != RUN_VARIABLE}
        if mark is not None:
            env[RUN_VARIABLE] = mark
        child = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(600)"],
            env=env,
            start_new_session=True,
        )
        started.append(child)
        # Popen returns once the exec began, before the new environment is in place
        environ = Path(f"/proc/{child.pid}/environ")
        wait_for(lambda: environ.read_bytes() != b"", timeout=10)
        return child

    yield start
    for child in started:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)
        child.wait()


def _namespace() -> str:
    found = os.stat("/proc/self/ns/pid")
    return f"{found.st_dev}.{found.st_ino}"


def _dead_run(journal: Path, namespace: str | None = None) -> str:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return f"{gone.pid}:1:{namespace or _namespace()}:{journal}"


def test_a_command_of_a_run_that_is_gone_is_stopped(tmp_path: Path, command: Command) -> None:
    journal = tmp_path / "t.csv.journal"
    left = command(_dead_run(journal))
    ticks = start_ticks(os.getpid())
    assert ticks is not None
    reused = command(f"{os.getpid()}:{ticks - 1}:{_namespace()}:{journal}")  # another start
    assert sorted(stop_leftovers(journal)) == sorted([left.pid, reused.pid])
    wait_for(lambda: left.poll() is not None and reused.poll() is not None, timeout=10)


def test_commands_of_live_runs_other_journals_or_no_run_are_left_alone(
    tmp_path: Path, command: Command
) -> None:
    journal = tmp_path / "t.csv.journal"
    mark = run_mark(journal)
    assert mark is not None
    assert mark.startswith(f"{os.getpid()}:")
    others = [
        command(mark),  # this process's own run
        command(_dead_run(tmp_path / "other.csv.journal")),
        command(None),
        command("garbage"),
        # a run in another PID namespace (a container): its number names no process here
        command(_dead_run(journal, namespace="1.2")),
        command(f"{os.getpid()}:1:{journal}"),  # a mark without its namespace
    ]
    assert stop_leftovers(journal) == []
    assert all(child.poll() is None for child in others)


def test_a_leftover_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    journal = tmp_path / "t.csv.journal"
    ready = tmp_path / "ready"
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
            " pathlib.Path(sys.argv[1]).touch(); time.sleep(600)",
            str(ready),
        ],
        env={**os.environ, RUN_VARIABLE: _dead_run(journal)},
        start_new_session=True,
    )
    try:
        wait_for(ready.exists, timeout=30)
        assert stop_leftovers(journal) == [stubborn.pid]
        assert stubborn.wait(timeout=10) == -signal.SIGKILL
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stubborn.pid, signal.SIGKILL)
        stubborn.wait()


def _may_unshare() -> bool:
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, check=False
    )
    return probe.returncode == 0


@pytest.mark.skipif(
    shutil.which("unshare") is None or not _may_unshare(),
    reason="making a PID namespace takes root (or user namespaces) and unshare(1)",
)
def test_the_commands_of_a_live_run_in_another_pid_namespace_are_left_alone(
    tmp_path: Path,
) -> None:
    """The host sees a container's processes, whose run's number means another process
    here: the old check took that run for gone and stopped its live commands."""
    journal = tmp_path / "t.csv.journal"
    ready = tmp_path / "ready"
    script = (
        "import os, pathlib, subprocess, sys, time\n"
        "from csvjournal._process import RUN_VARIABLE, run_mark\n"
        "env = {**os.environ, RUN_VARIABLE: run_mark(pathlib.Path(sys.argv[1]))}\n"
        "sleep = [sys.executable, '-c', 'import time; time.sleep(600)']\n"
        "child = subprocess.Popen(sleep, env=env)\n"
        "pathlib.Path(sys.argv[2]).write_text(str(os.getpid()))\n"
        "time.sleep(600)\n"
    )
    container = subprocess.Popen(
        [
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            sys.executable,
            "-c",
            script,
            str(journal),
            str(ready),
        ],
        start_new_session=True,
    )
    try:
        wait_for(ready.exists, timeout=30)
        assert int(ready.read_text()) < 10  # its own number inside the namespace
        marked = _marked_with(journal)
        assert len(marked) == 1
        assert stop_leftovers(journal) == []
        assert start_ticks(marked[0]) is not None
    finally:
        os.killpg(container.pid, signal.SIGKILL)
        container.wait()


@pytest.mark.skipif(
    shutil.which("unshare") is None or not _may_unshare(),
    reason="making a PID namespace takes root (or user namespaces) and unshare(1)",
)
def test_a_leftover_written_in_another_pid_namespace_names_it(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    code = (
        "import pathlib, sys\n"
        "from csvjournal._atomicfile import write_temp\n"
        "temp, _ = write_temp(pathlib.Path(sys.argv[1]), b'ID\\n1\\n')\n"
        "print(temp.name)\n"
    )
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", code, str(csv)],
        capture_output=True,
        text=True,
        check=True,
    )
    leftover = tmp_path / done.stdout.strip()
    assert leftover.exists()
    tag = leftover.name[len(temp_prefix(csv)) :].split("-")[0]
    pid, namespace = tag.split(".")
    assert int(pid) < 10  # its number inside the namespace: some process's here, maybe
    assert int(namespace) != (pid_namespace() or (0, 0))[1]
    assert remove_temp_files(csv, dead_only=True) == []  # its writer cannot be told gone
    quiet = time.time() - 11 * 60
    os.utime(leftover, (quiet, quiet))
    assert remove_temp_files(csv, dead_only=True) == [leftover]


@pytest.mark.skipif(
    shutil.which("unshare") is None or not _may_unshare(),
    reason="making a PID namespace takes root (or user namespaces) and unshare(1)",
)
def test_a_process_that_cannot_tell_its_namespace_keeps_a_named_ones_leftover(
    tmp_path: Path,
) -> None:
    # Without a /proc it took the namespace named for its own, found no such process in
    # it, and removed a live writer's file (a backup's work folder, say).
    csv = tmp_path / "t.csv"
    leftover = tmp_path / f"{temp_prefix(csv)}4000000.{(pid_namespace() or (0, 0))[1]}-x"
    leftover.write_text("half")
    code = (
        "import pathlib, sys\n"
        "from csvjournal._atomicfile import remove_temp_files\n"
        "from csvjournal._pids import pid_namespace\n"
        "assert pid_namespace() is None\n"
        "print(remove_temp_files(pathlib.Path(sys.argv[1]), dead_only=True))\n"
    )
    python = shlex.quote(sys.executable)
    shell = f"mount -t tmpfs none /proc && exec {python} -c {shlex.quote(code)} {csv}"
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount", "sh", "-c", shell],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[]\n"
    assert leftover.exists()


@pytest.mark.skipif(
    shutil.which("unshare") is None or not _may_unshare(),
    reason="making a PID namespace takes root (or user namespaces) and unshare(1)",
)
def test_recover_gives_up_on_a_stopped_exporter_it_cannot_see(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The exporter's process number means another process here (or none): recover could
    # not tell it was stopped, and waited for good.
    csv = tmp_path / "t.csv"
    ready = tmp_path / "ready"
    csvjournal.open(csv, key="ID").close()
    script = (
        "import pathlib, sys, time, csvjournal\n"
        "journal = csvjournal.open(sys.argv[1])\n"
        "journal.record('a')\n"
        "journal.flush()\n"
        "pathlib.Path(sys.argv[2]).touch()\n"
        "time.sleep(600)\n"
    )
    unshare = ["unshare", "--pid", "--fork", "--mount-proc"]
    container = subprocess.Popen(
        [*unshare, sys.executable, "-c", script, str(csv), str(ready)], start_new_session=True
    )
    monkeypatch.setattr(_flush, "UNSEEN_EXPORTER_SECONDS", 1.0)
    try:
        wait_for(ready.exists, timeout=60)
        assert exporter(csv)[0]
        assert exporter(csv)[1] is None  # its number names no process of this namespace
        os.killpg(container.pid, signal.SIGSTOP)
        with csvjournal.open(csv, export=False) as journal:
            journal.record("b")
            outcome: list[BaseException] = []
            waiter = threading.Thread(target=lambda: _catch(journal.recover, outcome))
            waiter.start()
            waiter.join(timeout=30)
            assert not waiter.is_alive(), "recover() still waits"
        assert len(outcome) == 1
        assert isinstance(outcome[0], csvjournal.FlushTimeoutError)
        assert "cannot see" in str(outcome[0])
    finally:
        os.killpg(container.pid, signal.SIGKILL)
        os.killpg(container.pid, signal.SIGCONT)
        container.wait()


def _catch(call: Callable[[], object], caught: list[BaseException]) -> None:
    try:
        call()
    except BaseException as exc:
        caught.append(exc)


def _marked_with(journal: Path) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            if (
                name.isdigit()
                and str(journal).encode() in Path(f"/proc/{name}/environ").read_bytes()
            ):
                found.append(int(name))
    return found
