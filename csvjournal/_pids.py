"""Whether the process named in a leftover's name (a temporary export, a backup's work
folder) may still be writing it.

A process id is reused once its process is gone (``pid_max`` is 32768 on many Linux
systems): a leftover whose writer died would be kept for good if another process got the
same number. Where the system says when a process started (Linux), a process that
started after the leftover was last changed is not its writer.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

__all__ = [
    "described",
    "holding",
    "owner_tag",
    "pid_namespace",
    "start_ticks",
    "stopped",
    "tag_alive",
    "writer_alive",
]

# The boot time is whole seconds, and the clock may have been stepped since the boot: a
# writer is taken for gone only when its number's process started well after the change.
_SLACK_SECONDS = 60.0
# A leftover of a process in another PID namespace (a container sharing the folder): its
# number names no process here, so it is taken for gone only once it has not changed for
# this long (its writer writes on, or renames it, within seconds).
_FOREIGN_QUIET_SECONDS = 600.0
# An owner tag: <pid>, or <pid>.<inode of the PID namespace> (ASCII digits: int() takes
# others too); no process number is above Linux's greatest pid_max (nor is os.kill's C long)
_TAG = re.compile(r"([0-9]{1,10})(?:\.([0-9]{1,20}))?")
_PID_MAX = 2**22


def writer_alive(pid: int, leftover: Path) -> bool:
    """Whether process ``pid`` runs and may have written ``leftover`` (a file or folder it
    named after itself) as it is now: it started before the leftover last changed."""
    if pid <= 0:  # (os.kill would signal this process's own group)
        return False
    try:
        changed = leftover.lstat().st_mtime  # (a link's own: its target may be gone)
    except FileNotFoundError:
        return True  # gone already: its writer renamed or removed it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it runs
        pass
    started = _started(pid)
    return started is None or started <= changed + _SLACK_SECONDS


def owner_tag() -> str:
    """This process, as the names of the leftovers it may leave give it: ``<pid>``, or
    ``<pid>.<namespace inode>`` where ``/proc`` says (see :func:`tag_alive`)."""
    namespace = pid_namespace()
    return str(os.getpid()) if namespace is None else f"{os.getpid()}.{namespace[1]}"


def tag_alive(tag: str, leftover: Path) -> bool | None:
    """Whether the process ``tag`` (an :func:`owner_tag`) may still write ``leftover``: one
    of this PID namespace as :func:`writer_alive` says; one of another (or of a namespace
    this process cannot tell its own from: no ``/proc``) while ``leftover`` changed in the
    last ten minutes. None when ``tag`` is not a tag."""
    found = _TAG.fullmatch(tag)
    if found is None:
        return None
    pid, namespace = int(found[1]), found[2]
    if pid > _PID_MAX:
        return False  # no such process, in any namespace
    ours = pid_namespace()
    if namespace is not None and (ours is None or int(namespace) != ours[1]):
        try:
            quiet = time.time() - leftover.lstat().st_mtime
        except FileNotFoundError:
            return True  # gone already: its writer renamed or removed it
        return quiet < _FOREIGN_QUIET_SECONDS
    return writer_alive(pid, leftover)


def start_ticks(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since the boot, where ``/proc`` says
    (else None): with its number, it names one process for as long as the system runs."""
    try:
        stat = open(f"/proc/{pid}/stat", "rb").read()  # noqa: SIM115 - one read
    except OSError:
        return None
    # "pid (name) state ppid ...": the name may hold spaces and ')'; field 22 is the start
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def pid_namespace() -> tuple[int, int] | None:
    """This process's PID namespace (device and inode of ``/proc/self/ns/pid``), or None
    where ``/proc`` does not say: process ids name processes only within one namespace."""
    try:
        found = os.stat("/proc/self/ns/pid")
    except OSError:
        return None
    return found.st_dev, found.st_ino


def holding(paths: list[Path]) -> list[int]:
    """The other processes that have one of ``paths`` open, where ``/proc`` shows them (this
    user's processes, or every one for root); none where it does not."""
    wanted = {str(path.resolve()) for path in paths}
    found = []
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []
    for pid in pids:
        if pid == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in wanted for fd in fds):
                found.append(pid)
        except OSError:  # gone, or another user's
            continue
    return found


def described(pid: int) -> str:
    """``process N`` and its command line where ``/proc`` shows it (shortened)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    except OSError:
        return f"process {pid}"
    words = [Path(argv[0].decode(errors="replace")).name]
    words += [word.decode(errors="replace") for word in argv[1:]]
    command = " ".join(" ".join(words).split())  # (a python -c script's lines, say)
    return f"process {pid}: {command[:77] + '...' if len(command) > 80 else command}"


def stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (SIGSTOP, Ctrl-Z) or traced, where ``/proc``
    says (else False)."""
    try:
        stat = open(f"/proc/{pid}/stat", "rb").read()  # noqa: SIM115 - one read
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :][:1] in (b"T", b"t")


def _started(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), where ``/proc`` says; else None."""
    boot = _boot_time()
    ticks = None if boot is None else start_ticks(pid)
    if boot is None or ticks is None:
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def _boot_time() -> float | None:
    """When the system booted, by the clock as it is now (Linux moves it when the clock is
    stepped: read each time, never kept)."""
    try:
        with open("/proc/stat", "rb") as stat:
            for line in stat:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None
