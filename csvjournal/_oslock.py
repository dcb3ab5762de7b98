"""The exporter lock: exclusive across processes and handles, gone when its process dies.

A POSIX record lock (``fcntl.lockf``) rather than ``flock`` (what the filelock package
uses): a ``flock`` lock belongs to the open file, which a forked child inherits, so a worker
forked from the exporting process would keep the lock alive after the exporter died and
could even release it. A record lock belongs to the process and is never inherited. Record
locks do not exclude handles of the same process, so a process-wide registry does that.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from csvjournal._atomicfile import make_folder_like, open_lock_like
from csvjournal._pids import pid_namespace
from csvjournal._posix import fcntl

__all__ = [
    "ExporterLock",
    "exporter",
    "exporter_alive",
    "exporter_pid",
    "lock_path",
    "open_lock_file",
]


def lock_path(csv_path: Path) -> Path:
    """The exporter lock of the journal of ``csv_path``."""
    return Path(f"{csv_path}.backups") / "exporter.lock"


def open_lock_file(path: Path) -> int:
    """Open the lock file ``path`` in a CSV's backups folder for reading and writing,
    making the folder and the file as shared as the CSV if missing (see
    :func:`~csvjournal._atomicfile.open_lock_like`).

    Raises:
        OSError: the folder or the file could not be made or opened.
    """
    folder = path.parent
    csv_path = folder.with_name(folder.name.removesuffix(".backups"))
    make_folder_like(folder, csv_path)  # the backups folder, deleted by hand say
    return open_lock_like(path, csv_path)


def _say_pid(fd: int) -> None:
    """Write this process's id in the lock file ``fd`` it just locked, for messages about a
    stalled exporter (see :func:`exporter_pid`); the lock itself never depends on it."""
    namespace = pid_namespace()  # (a process id names a process in one PID namespace)
    said = f"{os.getpid()}" if namespace is None else f"{os.getpid()} {namespace[1]}"
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{said}\n".encode(), 0)
    except OSError:  # a full disk, say: the lock holds all the same
        pass


_registry_lock = threading.Lock()
_held: dict[Path, ExporterLock] = {}  # lock file -> the handle of this process holding it


class ExporterLock:
    """One handle's claim on a lock file (not reentrant)."""

    def __init__(self, path: Path) -> None:
        self.path = path.resolve()
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock if it is free; never waits. True if this handle now holds it.

        Raises:
            OSError: the lock file cannot be made (a read-only folder).
        """
        with _registry_lock:
            if self.path in _held:
                return _held[self.path] is self
            fd = open_lock_file(self.path)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)  # we held no record lock on it, so closing releases nothing
                return False
            self._fd = fd
            _held[self.path] = self
            _say_pid(fd)  # under the registry lock: a release would close fd
            return True

    def keep(self) -> bool:
        """Whether this handle still holds the lock. A lock file deleted by hand (with the
        backups folder) is no lock: the next exporter would lock a new file while this one
        exports on. So a file no longer the one held is made and locked anew; False when
        another process locked it first (this handle must stop exporting)."""
        with _registry_lock:
            fd = self._fd
            if fd is None:
                return False
            try:
                found = os.stat(self.path)
            except FileNotFoundError:
                found = None
            held = os.fstat(fd)
            if found is not None and (found.st_dev, found.st_ino) == (held.st_dev, held.st_ino):
                return True
            try:
                new = open_lock_file(self.path)
            except OSError:  # a folder nobody can write: nobody makes another lock either
                return True
            try:
                fcntl.lockf(new, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(new)
                return False
            self._fd = new
            _say_pid(new)
        os.close(fd)  # the old file's lock: nobody else can reach that file any more
        return True

    def release(self) -> None:
        """Give the lock up (harmless when not held)."""
        with _registry_lock:
            if _held.get(self.path) is not self or self._fd is None:
                return
            del _held[self.path]
            fd, self._fd = self._fd, None
        os.close(fd)  # closing drops this process's record lock on the file

    def forget_after_fork(self) -> None:
        """In a forked child: close the inherited descriptor; the parent keeps its lock."""
        with _registry_lock:
            _held.pop(self.path, None)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def exporter_alive(csv_path: Path) -> bool:
    """Tell whether a process (this one included) holds the exporter lock of ``csv_path``'s
    journal now."""
    return exporter(csv_path)[0]


def exporter_pid(csv_path: Path) -> int | None:
    """The process id that the exporter holding ``csv_path``'s lock wrote in it; None when
    no exporter holds it, or the file does not say (an older csvjournal's), or it names a
    process of another PID namespace."""
    return exporter(csv_path)[1]


def exporter(csv_path: Path) -> tuple[bool, int | None]:
    """Whether a process (this one included) holds the exporter lock of ``csv_path``'s
    journal now, and the process id it wrote in the lock file (None if it did not), in one
    look at the file."""
    path = lock_path(csv_path).resolve()
    with _registry_lock:  # (a descriptor closed below would drop this process's own lock)
        if path in _held:
            return True, os.getpid()
        try:  # read-only: an operator who may read the job's files, not write them, asks too
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False, None
        try:
            try:
                fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # refused while one holds it
            except OSError:  # an exporter holds it: what did it write?
                text = os.pread(fd, 32, 0)
            else:
                return False, None
        finally:
            os.close(fd)
    return True, _pid_said(text.decode(errors="replace"))


def _pid_said(text: str) -> int | None:
    """The process id an exporter wrote, if it names a process of this PID namespace (an
    exporter in a container sharing the folder names one of its own)."""
    words = text.split()
    if not words or not words[0].isascii() or not words[0].isdigit():
        return None
    if len(words) > 1:
        ours = pid_namespace()
        if ours is None or words[1] != str(ours[1]):
            return None
    return int(words[0])
