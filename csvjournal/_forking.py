"""Keeping SQLite connections out of ``fork()``.

SQLite keeps, per process, a table of the locks it believes it holds on each file. A forked
child inherits that table but not the locks, so a connection the child opens believes it
holds locks it does not: the parent, closing its last connection, then thinks it is the
journal's last user and checkpoints and deletes the WAL under the child. So before a fork
every live journal of this process closes its connections (after waiting for operations in
flight, and keeping new ones out), and reconnects when next used, in parent and child alike.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

__all__ = [
    "PID",
    "ForkAware",
    "ForkGate",
    "open_here",
    "register",
    "registered",
    "reopened",
    "unregister",
]

_K = TypeVar("_K")
_T = TypeVar("_T")

# This process's id, kept current by the fork hook below: os.getpid() is a system call,
# and a lone thread's record() asked for it twice (2% of its rate, right after an fsync).
PID = os.getpid()


class ForkGate:
    """Counts a handle's database operations in flight, so a fork can wait them out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._busy = 0
        self._closed = False

    def enter(self) -> None:
        """Start an operation (waits while a fork is under way)."""
        with self._lock:
            if not self._closed:
                self._busy += 1
                return
        with self._changed:
            while self._closed:
                self._changed.wait()
            self._busy += 1

    def exit(self) -> None:
        """End the operation started by the matching :meth:`enter`."""
        with self._lock:
            self._busy -= 1
            if self._closed and self._busy == 0:
                self._changed.notify_all()

    @contextmanager
    def operation(self) -> Iterator[None]:
        """:meth:`enter` ... :meth:`exit` around a block."""
        self.enter()
        try:
            yield
        finally:
            self.exit()

    def close(self, timeout: float, *, inside: bool = False) -> bool:
        """Keep new operations out and wait for those in flight to end.

        Returns False when that cannot happen: the calling thread is ``inside`` an
        operation itself (it forks from inside a ``batch()``), or ``timeout`` ran out.
        """
        with self._changed:
            self._closed = True
            if inside:
                return False
            return self._changed.wait_for(lambda: self._busy == 0, timeout)

    def reopen(self) -> None:
        """Let operations run again."""
        with self._changed:
            self._closed = False
            self._changed.notify_all()


class ForkAware(Protocol):
    """What a registered object does around ``fork()``."""

    def _before_fork(self) -> None: ...
    def _after_fork_in_parent(self) -> None: ...
    def _after_fork_in_child(self) -> None: ...


_REOPENED: dict[tuple[int, object, object], Any] = {}
_REOPENED_LOCK = threading.Lock()


def reopened(cls: Callable[[_K], _T], options: _K) -> _T:
    """An object passed to this process (unpickled), made once a process per ``options``
    however many tasks bring it, again once closed: a journal handle a task, never
    closed, ran a pool worker out of file descriptors."""
    key = (os.getpid(), cls, options)
    with _REOPENED_LOCK:
        found = _REOPENED.get(key)
        if found is None or getattr(found, "_closed", False):
            found = _REOPENED[key] = cls(options)
        return found


_registered: weakref.WeakSet[ForkAware] = weakref.WeakSet()


def register(obj: ForkAware) -> None:
    """Call ``obj``'s hooks around every ``fork()`` while it lives."""
    _registered.add(obj)


def registered() -> list[ForkAware]:
    """Every registered object still alive."""
    return list(_registered)


def open_here(journal: Path, but: object = None) -> bool:
    """Whether a handle of this process (other than ``but``) has ``journal`` open: POSIX
    record locks, SQLite's included, never conflict within one process, so they cannot
    tell."""
    target = journal.resolve()
    return any(
        obj is not but
        and not getattr(obj, "_closed", True)
        and getattr(obj, "_pid", None) == PID
        and Path(getattr(obj, "journal_path", "")).resolve() == target
        for obj in list(_registered)
    )


def unregister(obj: ForkAware) -> None:
    """Stop calling ``obj``'s fork hooks."""
    _registered.discard(obj)


def _before() -> None:
    for obj in list(_registered):
        obj._before_fork()


def _in_parent() -> None:
    for obj in list(_registered):
        obj._after_fork_in_parent()


def _in_child() -> None:
    global PID  # noqa: PLW0603 - the one place that changes it
    PID = os.getpid()
    for obj in list(_registered):
        obj._after_fork_in_child()


os.register_at_fork(before=_before, after_in_parent=_in_parent, after_in_child=_in_child)
