"""One command of ``csvjournal run``: started in a session of its own, waited for with a
timeout, its outcome (exit code and the last line it wrote on stderr) read back.

The command is done when its own process exits, not when its stderr closes: a background
process it left running (``sleep 30 &``, a daemon, an ssh master) keeps the pipe open,
and waiting for that would hold its row, and the run, for as long as it lives.

A run killed with SIGKILL (by hand, by the kernel's out-of-memory killer) cannot stop its
commands, and they go on. Once its leases run out, the next run would start their rows a
second time beside them. So every command gets ``CSVJOURNAL_RUN`` in its environment: the
run's process id, when the run started (together they name that process and no later one
given its number), its PID namespace and the journal. Before it claims anything, a run looks
through the system's processes for that mark of a run of its journal that is gone, and stops
them (its commands, and whatever they started that kept the variable). A process id names a
process only in its own namespace: the commands of a run in a container, which the host
sees, are never judged by the host's process of that number (they are left alone). Where
the system does not say when a process started or what its environment was (no ``/proc``),
commands are not marked, and nothing is stopped. A file per command would have cost every commit's
fsync the file system's journal entries for its creation and removal: a third of run's
rate, measured.
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

from csvjournal._pids import pid_namespace, start_ticks
from csvjournal.csvio import EXCEL_MAX_CELL

__all__ = ["RUN_VARIABLE", "Outcome", "kill_group", "run_mark", "start", "stop_leftovers", "wait"]

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
                # ended by our SIGTERM, also when it then exits 0 or 143 by itself: a timeout
                code = min(child.wait(), 0) or -signal.SIGTERM
                return Outcome(code, f"timed out after {timeout:g} s")
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


RUN_VARIABLE = "CSVJOURNAL_RUN"


def _namespace() -> str | None:
    found = pid_namespace()
    return None if found is None else f"{found[0]}.{found[1]}"


def run_mark(journal: Path) -> str | None:
    """This process's mark for the commands it runs for ``journal`` (see the module's
    docstring): ``pid:start:namespace:journal``, or None where ``/proc`` cannot say when
    it started or in which PID namespace it runs."""
    ticks, namespace = start_ticks(os.getpid()), _namespace()
    if ticks is None or namespace is None:
        return None
    return f"{os.getpid()}:{ticks}:{namespace}:{journal}"


def stop_leftovers(journal: Path) -> list[int]:
    """Stop the processes marked by runs of ``journal`` that are gone (SIGTERM, then
    SIGKILL to those still there shortly after); return their process ids."""
    namespace = _namespace()
    left = {
        pid: ticks
        for pid in _processes()
        if pid != os.getpid()
        and _left_by_dead_run(pid, journal, namespace)
        and (ticks := start_ticks(pid)) is not None
    }
    for pid in left:
        log.warning("leftover_command_stopped", pid=pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + _TERM_SECONDS
    while time.monotonic() < deadline and not all(map(_gone, left)):
        time.sleep(_POLL_SECONDS)
    for pid, ticks in left.items():
        # the same process, not one given its number since it ended
        if not _gone(pid) and start_ticks(pid) == ticks:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    return list(left)


def _processes() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def _left_by_dead_run(pid: int, journal: Path, namespace: str | None) -> bool:
    try:  # the environment the process started with; only our own user's are readable
        environ = open(f"/proc/{pid}/environ", "rb").read()  # noqa: SIM115 - one read
    except OSError:
        return False
    prefix = f"{RUN_VARIABLE}=".encode()
    for variable in environ.split(b"\0"):
        if variable.startswith(prefix):
            mark = variable[len(prefix) :].decode(errors="replace")
            run, ticks, marked_in, marked = [*mark.split(":", 3), "", "", ""][:4]
            if (
                marked != str(journal)
                or marked_in != namespace  # another namespace's run: its number is not ours
                or not (run.isdigit() and ticks.isdigit())
            ):
                return False
            return start_ticks(int(run)) != int(ticks)  # that run is gone
    return False


def _gone(pid: int) -> bool:
    """No such process, or only its zombie, waiting for its new parent to reap it."""
    try:
        stat = open(f"/proc/{pid}/stat", "rb").read()  # noqa: SIM115 - one read
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2 :].split()[:1] in ([b"Z"], [b"X"])
