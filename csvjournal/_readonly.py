"""A journal opened by a user who may read it but not write it: an operator looking at
another account's job (``csvjournal status``, ``pending``, ``history``).

SQLite reads a WAL journal through its -wal and -shm files. When no process has the
journal open, they are not there, and the reader makes them, owned by its user. A
connection that may not write the journal never removes them, so they would stay behind,
and the job's owner, who may not write files of another user, could record nothing more.
:class:`ReadOnlyVisit` makes them first, writable by whoever may write the journal (by
ACL, where the file system keeps them: the job's user may start recording meanwhile),
and removes them again once the reader is done with them.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from pathlib import Path

import structlog

from csvjournal._acl import make_like
from csvjournal._fsinfo import WAL_HEADER, companion
from csvjournal._posix import fcntl

__all__ = [
    "ReadOnlyVisit",
    "await_readers_files",
    "in_use",
    "make_companions",
    "may_write",
    "remove_made_companions",
]

log = structlog.get_logger(__name__)

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


def make_companions(journal: Path) -> None:
    """Before a user who may not write ``journal`` connects to it: make its -wal and -shm
    files if neither is there, writable by whoever may write the journal (the job's user
    may start recording while this user reads; see :mod:`csvjournal._acl`). This user
    removes them once done (:func:`remove_made_companions`, as a :class:`ReadOnlyVisit`
    ends). Called before each connection: the job's last connection to close removes
    them, and a connection opened after that would make them anew."""
    wal, shm = companion(journal, "-wal"), companion(journal, "-shm")
    if not journal.exists() or may_write(journal) or wal.exists() or shm.exists():
        return
    for made in (wal, shm):
        # One byte: shorter than a WAL's header (no frame), and a -shm SQLite rebuilds
        make_like(made, journal, b"\0")


def await_readers_files(journal: Path, timeout: float) -> None:
    """Before a user who may write ``journal`` connects to it: wait, up to ``timeout``
    seconds, while its -wal or -shm file is one this user may not write. A user who may
    only read the journal made it (where the file system keeps no ACLs, or in a moment's
    race with this user's last connection closing), and removes it once done: a
    connection to it now could read, but never write. Past the timeout the connection's
    first write says which file is read-only."""
    if not may_write(journal):
        return
    deadline, delay = time.monotonic() + timeout, 0.002
    while _foreign_companion(journal) is not None:
        if time.monotonic() >= deadline:
            return
        if delay == 0.002:
            log.info("journal_waits_for_reader", path=str(journal))
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _foreign_companion(journal: Path) -> Path | None:
    for suffix in ("-wal", "-shm"):
        path = companion(journal, suffix)
        if path.exists() and not may_write(path):
            return path
    return None


def remove_made_companions(journal: Path) -> None:
    """Remove the -wal and -shm files of ``journal`` that this user made to read it,
    once this process has closed every connection to it: unless another process uses
    them by now (it holds SQLite's lock on the -shm), or they are not the empty files of
    this user. SQLite removes them for a user who may write the journal, never for one
    who may not."""
    wal, shm = companion(journal, "-wal"), companion(journal, "-shm")
    uid = os.geteuid()
    found = wal.stat() if wal.exists() else None
    if found is not None and (found.st_size >= WAL_HEADER or found.st_uid != uid):
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


class ReadOnlyVisit:
    """An open of ``journal`` by a user who may not write it, which may make its -wal and
    -shm files; :meth:`end` removes them again."""

    def __init__(self, journal: Path) -> None:
        self._journal = journal.resolve()
        make_companions(journal)

    def end(self) -> None:
        """Remove the files this process made (see :func:`remove_made_companions`); call
        once this process has no connection to the journal left. A user who may not
        write the journal always looks: SQLite may have made them anew meanwhile (after
        the job's last connection closed and removed the earlier ones)."""
        if self._journal.exists() and not may_write(self._journal):
            remove_made_companions(self._journal)
