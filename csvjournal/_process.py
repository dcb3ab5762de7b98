"""One command of ``csvjournal run``: started in a session of its own, waited for with a
timeout, its outcome (exit code and the last line it wrote on stderr) read back.

The command is done when its own process exits, not when its stderr closes: a background
process it left running (``sleep 30 &``, a daemon, an ssh master) keeps the pipe open,
and waiting for that would hold its row, and the run, for as long as it lives.

A run killed with SIGKILL (by hand, by the kernel's out-of-memory killer) cannot stop its
commands, and they go on. Once its leases run out, the next run would start their rows a
second time beside them. So each running command is noted in a file (the run's process
id, the command's, and when the command started: together they name that process and no
later one given the same number), and a run stops the commands of dead runs before it
claims anything. Where the system does not say when a process started (no ``/proc``),
nothing is noted, and nothing is stopped.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from csvjournal._pids import start_ticks, writer_alive
from csvjournal.csvio import EXCEL_MAX_CELL

__all__ = ["Outcome", "kill_group", "note_running", "start", "stop_leftovers", "wait"]

log = structlog.get_logger(__name__)

_TERM_SECONDS = 2.0
_STDERR_TAIL = 64 * 1024
_POLL_SECONDS = 0.05  # how soon an exit is seen while a background process holds stderr
_DRAIN_SECONDS = 0.1  # what is still in the pipe after the exit is read this long


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a command ended: ``code`` is its exit status (negative: the signal that ended
    it), or ``None`` when it was stopped by us, not through any fault of its row."""

    code: int | None
    message: str


def start(
    argv: list[str], env: Mapping[str, str], *, show_output: bool
) -> subprocess.Popen[bytes] | Outcome:
    """Start ``argv`` (stdin empty, stdout discarded unless ``show_output``); an
    :class:`Outcome` when it cannot be started: 127 (no such program, a NUL byte in a
    value) or, as a shell says, 126 (a file that is not executable)."""
    try:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=None if show_output else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # Ctrl-C reaches run, which decides what to do
        )
    except PermissionError as exc:  # as a shell says: found, not executable
        return Outcome(126, f"cannot run {argv[0]!r}: {exc.strerror or exc}")
    except OSError as exc:
        return Outcome(127, f"cannot run {argv[0]!r}: {exc.strerror or exc}")
    except ValueError:  # a NUL byte, which no argument or environment variable can hold
        return Outcome(127, f"cannot run {argv[0]!r}: a value of the row holds a NUL byte")


def wait(
    child: subprocess.Popen[bytes], timeout: float | None, stopped: threading.Event
) -> Outcome:
    """Wait for ``child`` to exit (its process group is killed after ``timeout`` seconds);
    ``stopped`` set means we killed it (the row is given back: ``code`` ``None``)."""
    assert child.stderr is not None
    deadline = None if timeout is None else time.monotonic() + timeout
    tail = bytearray()
    with selectors.DefaultSelector() as selector, child.stderr:
        os.set_blocking(child.stderr.fileno(), False)
        selector.register(child.stderr, selectors.EVENT_READ)
        while child.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                kill_group(child)
                if stopped.is_set():
                    return Outcome(None, "")
                return Outcome(child.wait(), f"timed out after {timeout:g} s")
            wait_for = _POLL_SECONDS if deadline is None else deadline - time.monotonic()
            if not _read(selector, child, tail, min(_POLL_SECONDS, max(0.0, wait_for))):
                _wait_a_little(child, deadline)  # stderr closed: only the exit is left
        drain = time.monotonic() + _DRAIN_SECONDS
        while time.monotonic() < drain and _read(selector, child, tail, drain - time.monotonic()):
            pass
    code = child.returncode
    if stopped.is_set() and code != 0:  # we stopped it (it may exit 143 on SIGTERM): the
        return Outcome(None, "")  # row goes back; one that exited 0 did its work
    return Outcome(code, _message(code, bytes(tail)) if code else "")


def _read(
    selector: selectors.BaseSelector,
    child: subprocess.Popen[bytes],
    tail: bytearray,
    seconds: float,
) -> bool:
    """Read what ``child`` wrote on stderr within ``seconds`` into ``tail`` (its last
    bytes); False once the pipe is closed."""
    assert child.stderr is not None
    if not selector.get_map():
        return False
    if selector.select(seconds):
        data = child.stderr.read(_STDERR_TAIL)
        if data == b"":  # closed: every writer is gone
            selector.unregister(child.stderr)
            return False
        tail += data or b""
        del tail[:-_STDERR_TAIL]
    return True


def _wait_a_little(child: subprocess.Popen[bytes], deadline: float | None) -> None:
    seconds = _POLL_SECONDS if deadline is None else max(0.0, deadline - time.monotonic())
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(min(seconds, _POLL_SECONDS))


def _message(code: int, err: bytes) -> str:
    """The last non-empty line of ``err``, cut to what a spreadsheet cell holds; for a
    command that a signal ended without a word, which signal."""
    for line in reversed(err.decode(errors="replace").splitlines()):
        if line.strip():
            text = line.strip()
            return text if len(text) <= EXCEL_MAX_CELL else text[: EXCEL_MAX_CELL - 1] + "…"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            return f"killed by signal {-code}"
        return f"killed by signal {-code} ({name})"
    return ""


def kill_group(child: subprocess.Popen[bytes]) -> None:
    """SIGTERM the command's process group; SIGKILL what is left of it (the command, or a
    process it started that ignores SIGTERM) shortly after."""
    try:
        os.killpg(child.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + _TERM_SECONDS
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(_TERM_SECONDS)
    while time.monotonic() < deadline:  # the rest of the group gets the same time
        try:
            os.killpg(child.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(_POLL_SECONDS)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()


def note_running(folder: Path, child: subprocess.Popen[bytes]) -> Path | None:
    """Note the running ``child`` in ``folder`` for :func:`stop_leftovers` (remove the
    note once it exited); None when it cannot be noted (no ``/proc``, a folder that cannot
    be written: the command runs all the same)."""
    ticks = start_ticks(child.pid)
    if ticks is None:
        return None
    note = folder / f"{os.getpid()}-{child.pid}"
    try:
        folder.mkdir(exist_ok=True)
        note.write_text(str(ticks), encoding="ascii")
    except OSError:
        return None
    return note


def stop_leftovers(folder: Path) -> list[int]:
    """Stop the commands noted in ``folder`` whose run is gone and that still run (SIGTERM
    to each one's process group, SIGKILL to what is left of it shortly after); forget the
    notes of dead runs. Return the process ids of the commands stopped."""
    try:
        notes = list(folder.iterdir())
    except OSError:  # none yet, or not readable: nothing known to stop
        return []
    stopped = []
    for note in notes:
        run, _, command = note.name.partition("-")
        if not (run.isdigit() and command.isdigit()) or writer_alive(int(run), note):
            continue
        try:
            ticks: int | None = int(note.read_text(encoding="ascii"))
        except (OSError, ValueError):
            ticks = None
        pid = int(command)
        if ticks is not None and start_ticks(pid) == ticks:  # that very process, still on
            log.warning("leftover_command_stopped", pid=pid, run_pid=int(run))
            _stop_group(pid)
            stopped.append(pid)
        note.unlink(missing_ok=True)
    return stopped


def _stop_group(pid: int) -> None:
    """:func:`kill_group` for a process that is not our child (its run's is dead)."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + _TERM_SECONDS
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(_POLL_SECONDS)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
