"""A journal opened by a user who may read it but not write it: an operator looking at
another account's job (``csvjournal status``, ``pending``, ``history``).

SQLite reads a WAL journal through its -wal and -shm files. When no process has the
journal open, they are not there, and the reader makes them, owned by its user. A
connection that may not write the journal never removes them, so they would stay behind,
and the job's owner, who may not write files of another user, could record nothing more.
:class:`ReadOnlyVisit` removes them again once the reader is done with them.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from pathlib import Path

from csvjournal._fsinfo import companion
from csvjournal._posix import fcntl

__all__ = ["ReadOnlyVisit", "in_use", "may_write", "remove_made_companions"]

# The -shm byte that every connection using the file holds a shared lock on while it does
# (SQLite's "DMS" lock, os_unix.c: UNIX_SHM_DMS = (22 + SQLITE_SHM_NLOCK) * 4 + 8).
_SHM_DMS_BYTE = 128


def may_write(path: Path) -> bool:
    """Whether this process's user may write the file ``path``."""
    effective = os.access in os.supports_effective_ids
    return os.access(path, os.W_OK, effective_ids=effective)


def in_use(journal: Path) -> bool:
    """Whether another process has ``journal`` open now: it holds SQLite's lock on the
    journal's -shm file. Only for a process with no connection to it: POSIX locks are the
    process's, and the look would drop its own."""
    try:
        fd = os.open(companion(journal, "-shm"), os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _SHM_DMS_BYTE)
    except OSError:
        return True
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, _SHM_DMS_BYTE)
        return False
    finally:
        os.close(fd)


def remove_made_companions(journal: Path) -> None:
    """Remove the -wal and -shm files of ``journal`` that this user made to read it,
    once this process has closed every connection to it: unless another process uses
    them by now (it holds SQLite's lock on the -shm), or they are not the empty files of
    this user. SQLite removes them for a user who may write the journal, never for one
    who may not."""
    wal, shm = companion(journal, "-wal"), companion(journal, "-shm")
    uid = os.geteuid()
    found = wal.stat() if wal.exists() else None
    if found is not None and (found.st_size or found.st_uid != uid):
        return
    made_writable = None  # the mode of a -shm made read-only like its journal
    try:
        fd = os.open(shm, os.O_RDWR)
    except PermissionError:
        made_writable = _make_own_writable(shm, uid)
        if made_writable is None:
            return
        try:
            fd = os.open(shm, os.O_RDWR)
        except OSError:
            _restore_mode(shm, made_writable)
            return
    except OSError:
        return
    try:
        if os.fstat(fd).st_uid != uid:
            return
        try:  # held until the files are gone: a process opening them now waits for it
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _SHM_DMS_BYTE)
        except OSError:  # another process uses them: they stay, as they were
            if made_writable is not None:
                _restore_mode(shm, made_writable)
            return
        with contextlib.suppress(FileNotFoundError):
            wal.unlink()
        with contextlib.suppress(FileNotFoundError):
            shm.unlink()
    finally:
        os.close(fd)


def _restore_mode(path: Path, mode: int) -> None:
    with contextlib.suppress(OSError):
        path.chmod(mode)


def _make_own_writable(path: Path, uid: int) -> int | None:
    """Make ``path`` writable by its owner if it is this user's (the user may change its
    mode); its mode before, or None if it is not this user's."""
    try:
        found = path.stat()
        if found.st_uid != uid:
            return None
        path.chmod(found.st_mode | stat.S_IWUSR)
    except OSError:
        return None
    return stat.S_IMODE(found.st_mode)


# The journals whose -wal and -shm files this process made, as a user who may not write
# them: whichever of its handles closes last removes them.
_made: set[Path] = set()
_made_lock = threading.Lock()


class ReadOnlyVisit:
    """An open of ``journal`` by a user who may not write it, which may make its -wal and
    -shm files; :meth:`end` removes them again."""

    def __init__(self, journal: Path) -> None:
        self._journal = journal.resolve()
        made = (
            journal.exists()
            and not may_write(journal)
            and not companion(journal, "-wal").exists()
            and not companion(journal, "-shm").exists()
        )
        if made:
            with _made_lock:
                _made.add(self._journal)

    def end(self) -> None:
        """Remove the files this process made (see :func:`remove_made_companions`); call
        once this process has no connection to the journal left."""
        with _made_lock:
            if self._journal not in _made:
                return
            _made.discard(self._journal)
        remove_made_companions(self._journal)
