"""Ctrl-C held off while the main thread commits, and raised as soon as the commit is over.

A ``KeyboardInterrupt`` can be raised between any two Python calls of the thread that runs
the signal handler, the main thread. Raised inside a group commit, between ``BEGIN
IMMEDIATE`` and the release of the writers' locks, it left the transaction open and the
locks held (this handle could not write again, other processes waited for the busy
timeout); raised in a group's leader while it synced, it failed the other threads of the
group, whose records had committed. So while the main thread is inside a commit, a
``SIGINT`` is only noted, and :class:`HeldInterrupts` raises ``KeyboardInterrupt`` when the
block ends, once the commit is done and every lock released. The wait for a turn is one
commit long (or, when other processes keep the journal busy, up to the busy timeout); a
Ctrl-C pressed again half a second or more after the first is raised at once.

The handler held off may be the default one or one the application installed (raising
``SystemExit`` from it would do the same damage); it runs once the commit is over. The
C-level ``_signal`` calls cost half a microsecond, against six for ``signal``'s.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # no stubs; signal.signal costs 6x
import os
import threading
import time
from types import FrameType, TracebackType

__all__ = ["HeldInterrupts"]

_SIGINT = 2  # the same number on every POSIX system
# A Ctrl-C this long after the first one held off is raised at once: the commit is waiting
# for the journal (other processes keep it busy), and the user has waited enough.
_IMPATIENT_SECONDS = 0.5
# The thread that runs Python's signal handlers (a fork makes the forking thread the
# child's): asking threading for it costs every commit of every thread a property call.
_main_ident = threading.main_thread().ident


def _forked() -> None:
    global _main_ident  # noqa: PLW0603 - the one place that changes it
    _main_ident = threading.get_ident()


os.register_at_fork(after_in_child=_forked)


class HeldInterrupts:
    """A ``with`` block in which a SIGINT waits (in the main thread, whatever Python handler
    is installed: the default one, which raises ``KeyboardInterrupt``, or the
    application's); the handler runs when the block ends. One instance per block."""

    __slots__ = ("_noted", "_previous")

    def __init__(self) -> None:
        self._previous: object = None  # the handler held off, while it is
        self._noted: float | None = None  # when the first SIGINT came

    def __enter__(self) -> None:
        if threading.get_ident() != _main_ident:
            return
        previous = _signal.getsignal(_SIGINT)
        if callable(previous):  # not SIG_IGN or SIG_DFL: Python code would run mid-commit
            _signal.signal(_SIGINT, self._note)
            self._previous = previous

    def _note(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self._noted is not None and now - self._noted >= _IMPATIENT_SECONDS:
            self._noted = None  # run once, now: again, a while later
            self._previous(signum, frame)  # type: ignore[operator]
        elif self._noted is None:
            self._noted = now

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        previous, self._previous = self._previous, None
        if previous is None:
            return
        _signal.signal(_SIGINT, previous)
        if self._noted is not None:
            previous(_SIGINT, None)  # type: ignore[operator]  # its turn, the commit done
