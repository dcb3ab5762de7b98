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

Only the default handler is held off: a handler the application installed runs as usual
(the C-level ``_signal`` calls cost half a microsecond, against six for ``signal``'s).
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # no stubs; signal.signal costs 6x
import threading
import time
from types import FrameType, TracebackType

__all__ = ["HeldInterrupts"]

_SIGINT = 2  # the same number on every POSIX system
# A Ctrl-C this long after the first one held off is raised at once: the commit is waiting
# for the journal (other processes keep it busy), and the user has waited enough.
_IMPATIENT_SECONDS = 0.5


class HeldInterrupts:
    """A ``with`` block in which Ctrl-C waits (in the main thread, under the default
    handler); ``KeyboardInterrupt`` is raised when the block ends. One instance per block."""

    __slots__ = ("_held", "_noted")

    def __init__(self) -> None:
        self._held = False
        self._noted: float | None = None  # when the first Ctrl-C came

    def __enter__(self) -> None:
        main = threading.get_ident() == threading.main_thread().ident
        if main and _signal.getsignal(_SIGINT) is _signal.default_int_handler:
            _signal.signal(_SIGINT, self._note)
            self._held = True

    def _note(self, _signum: int, _frame: FrameType | None) -> None:
        now = time.monotonic()
        if self._noted is not None and now - self._noted >= _IMPATIENT_SECONDS:
            raise KeyboardInterrupt  # Ctrl-C again, a while later: whatever it leaves behind
        if self._noted is None:
            self._noted = now

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._held:
            return
        _signal.signal(_SIGINT, _signal.default_int_handler)
        self._held = False
        if self._noted is not None:
            raise KeyboardInterrupt
