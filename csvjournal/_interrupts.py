"""Ctrl-C (and the other signals an application handles) held off while the main thread
commits, and handled as soon as the commit is over.

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

The handler held off may be the default one or one the application installed; the same
holds for ``SIGTERM`` (a handler calling ``sys.exit``), ``SIGALRM`` (a timeout that
raises) and the rest of :data:`HELD_SIGNALS`, which do the same damage. The C-level
``_signal`` calls cost half a microsecond, against six for ``signal``'s.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # no stubs; signal.signal costs 6x
import os
import threading
import time
from collections import deque
from itertools import repeat, starmap
from types import FrameType, MethodType, TracebackType
from typing import Any

__all__ = ["HELD_SIGNALS", "HeldInterrupts", "start_thread"]

_SIGINT = 2  # the same number on every POSIX system
# The signals an application commonly handles in Python (a handler that raises or exits
# would land mid-commit): Ctrl-C, a service manager's stop, a hang-up, a timeout's alarm,
# the user signals.
HELD_SIGNALS = tuple(
    getattr(_signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGALRM", "SIGVTALRM", "SIGUSR1", "SIGUSR2")
    if hasattr(_signal, name)
)
# A Ctrl-C this long after the first one held off is raised at once: the commit is waiting
# for the journal (other processes keep it busy), and the user has waited enough.
_IMPATIENT_SECONDS = 0.5
# How many note-takers left behind one after another are followed to the handler they hold
# off (each is a hold whose swaps and put-backs two handlers cut short).
_CHAIN = 16
# The thread that runs Python's signal handlers (a fork makes the forking thread the
# child's): asking threading for it costs every commit of every thread a property call.
_main_ident = threading.main_thread().ident
_getsignal = _signal.getsignal


def _forked() -> None:
    global _main_ident  # noqa: PLW0603 - the one place that changes it
    forked_by_main = threading.get_ident() == _main_ident
    _main_ident = threading.get_ident()
    if forked_by_main:
        return  # (a hold of the forking thread ends in the child as in the parent)
    # Forked by another thread while the main thread held signals: that hold never ends
    # in the child (its thread is not there), so its note-takers would keep the
    # application's handlers off for good. They go back now.
    for signum in HELD_SIGNALS:
        handler = held = _getsignal(signum)
        for _ in range(_CHAIN):
            owner = getattr(handler, "__self__", None)
            if type(owner) is not HeldInterrupts:
                break
            owner._active, owner._previous = False, None
            handler = owner._saved.get(signum, _signal.SIG_DFL)
        if handler is not held:
            _signal.signal(signum, handler)


os.register_at_fork(after_in_child=_forked)


def _put_back(previous: dict[int, Any]) -> None:
    """Put each signal's handler back. ``signal()`` first runs the handlers of signals that
    came (those already put back are the application's): one that raises is raised once
    every handler is back, the rest put back again. The calls run in one C loop: no
    Python code (where handlers run too) comes between them."""
    try:
        deque(map(_signal.signal, previous.keys(), previous.values()), maxlen=0)
        return
    except BaseException as exc:
        raised: BaseException = exc
    left = list(previous.items())
    while left:
        try:
            left = [(signum, handler) for signum, handler in left if _getsignal(signum) != handler]
            deque(starmap(_signal.signal, left), maxlen=0)
            left = []
        except BaseException as exc:
            raised = raised or exc
    raise raised


def _holding(handler: Any) -> HeldInterrupts | None:
    """The hold whose note-taker ``handler`` is, if that hold holds now."""
    owner = getattr(handler, "__self__", None)
    if type(owner) is HeldInterrupts and owner._active and owner._previous is not None:
        return owner
    return None


def _left_behind(handler: Any, me: HeldInterrupts) -> HeldInterrupts | None:
    """The block whose note-taker ``handler`` is, if that block no longer holds (or is
    ``me``, looking for the handler behind its own); None for any other handler."""
    owner = getattr(handler, "__self__", None)
    if type(owner) is HeldInterrupts and (not owner._active or owner is me):
        return owner
    return None


class HeldInterrupts:
    """A ``with`` block in which the signals of :data:`HELD_SIGNALS` wait (in the main
    thread, whatever Python handler is installed: the default one, which raises
    ``KeyboardInterrupt``, or the application's: a ``SIGTERM`` handler that calls
    ``sys.exit``, a ``SIGALRM`` one that raises a timeout); each runs when the block ends,
    in the order they came. :meth:`released` lets them through for a part of the block
    (the user's own code in a ``batch()``). One instance per block."""

    __slots__ = ("_active", "_main", "_noted", "_previous", "_saved")

    def __init__(self) -> None:
        self._main = False  # in the main thread, the one that runs signal handlers
        self._active = False  # holding, or about to: its note-taker notes (see _note)
        self._previous: dict[int, Any] | None = None  # the handlers held off, while they are
        self._noted: dict[int, float] = {}  # when each held signal first came
        self._saved: dict[int, Any] = {}  # the handlers the last hold swapped (see _held_off)

    def __enter__(self) -> HeldInterrupts:
        self._main = threading.get_ident() == _main_ident
        if self._main:
            self._hold()
        return self

    def _hold(self) -> None:
        self._active = True  # (a signal that comes from here on is noted)
        previous: dict[int, Any] = {}
        for signum in HELD_SIGNALS:  # (a handler that raises here swaps nothing)
            handler = _getsignal(signum)
            if type(handler) is MethodType:  # a note-taker's, maybe (see _held_off)
                handler = self._held_off(signum, handler)
            if callable(handler):  # not SIG_IGN or SIG_DFL: Python code would run mid-commit
                previous[signum] = handler
        self._saved = previous
        try:
            # (signal() first runs the handlers of signals already come: one may raise,
            # its own swap not made, and those swapped before must go back)
            deque(map(_signal.signal, previous, repeat(self._note, len(previous))), maxlen=0)
        except BaseException:
            self._active = False
            _put_back(previous)
            raise
        self._previous = previous or None

    def _held_off(self, signum: int, handler: Any) -> Any:
        """The handler to hold off for ``signum``: ``handler``, or the one that a block's
        note-taker left behind held off (a signal's handler that raised as that block
        swapped handlers, and again as it put them back, left it installed), taking over
        the signal it noted."""
        for _ in range(_CHAIN):
            owner = _left_behind(handler, self)
            if owner is None:
                return handler  # the application's, or a block's that holds (nested)
            if owner._noted.pop(signum, None) is not None:
                self._noted.setdefault(signum, time.monotonic())
            handler = owner._saved.get(signum, _signal.SIG_DFL)
        return handler

    def _note(self, signum: int, frame: FrameType | None) -> None:
        if not self._active:  # left behind (see _held_off): the handler it held off
            handler = self._held_off(signum, self._saved.get(signum))
            if callable(handler) and _left_behind(handler, self) is None:
                handler(signum, frame)
            return
        now = time.monotonic()
        noted = self._noted.get(signum)
        if noted is None:
            self._noted[signum] = now
        elif signum == _SIGINT and now - noted >= _IMPATIENT_SECONDS and self._previous is not None:
            del self._noted[signum]  # run once, now: again, a while later
            self._run_impatient(signum, frame)

    def _run_impatient(self, signum: int, frame: FrameType | None) -> None:
        """Run the application's handler of ``signum`` now. Held inside another hold of
        this thread (a claim's commit inside the claim's hold), the handler held off is
        that hold's note-taker: the application's is the outermost hold's, whose note of
        the signal it answers too (noting there, the press took the user two more)."""
        owner, previous = self, self._previous
        while previous is not None and (outer := _holding(previous.get(signum))) is not None:
            outer._noted.pop(signum, None)
            owner, previous = outer, outer._previous
        if previous is None:
            return
        try:
            previous[signum](signum, frame)
        finally:
            owner._keep_new_handler(previous, signum, self._note)

    def _keep_new_handler(self, previous: dict[int, Any], signum: int, note: Any) -> None:
        """A handler run while held that installed another (a one-shot one) keeps it: it
        is put back at the end, and held off until then by ``note`` (the note-taker of the
        innermost hold, installed again)."""
        now = _getsignal(signum)
        if type(getattr(now, "__self__", None)) is HeldInterrupts:
            if now != note:
                _signal.signal(signum, note)
            return
        if callable(now):
            previous[signum] = now
            _signal.signal(signum, note)
        else:  # SIG_IGN, SIG_DFL: nothing of Python's to hold off
            del previous[signum]

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release()

    def _release(self) -> None:
        """Put the handlers back, and run those of the signals that came meanwhile."""
        previous, self._previous = self._previous, None
        if previous is None:
            return
        self._active = False  # (a signal that comes from here on runs its own handler)
        raised: BaseException | None = None
        try:
            _put_back(previous)
        except BaseException as exc:  # a signal's own handler, run as it was put back
            raised = exc
        if self._noted:
            try:
                self._run_noted(previous)
            except BaseException as exc:
                raised = raised or exc
        if raised is not None:
            raise raised

    def _run_noted(self, previous: dict[int, Any]) -> None:
        """Run the handler of each signal that came, the commit done; the first exception
        one raises is raised once every one has run (a second one's is dropped)."""
        noted, self._noted = self._noted, {}
        raised: BaseException | None = None
        for signum in noted:  # in the order they came
            if signum not in previous:  # replaced by SIG_IGN or SIG_DFL meanwhile
                continue
            try:
                previous[signum](signum, None)
            except BaseException as exc:
                raised = raised or exc
        if raised is not None:
            raise raised

    def deliver(self) -> None:
        """Run the handlers of the signals that came so far, now, holding the later ones
        off again after (before a COMMIT: raising, they undo it). The handlers are put
        back first: one that installs another (a one-shot handler) keeps it."""
        if self._noted and self._previous is not None:
            try:
                self._release()
            finally:
                self._hold()

    def released(self) -> _Released:
        """A part of the block in which signals are handled as they come; one that came
        before it is handled as it begins (and may raise there)."""
        return _Released(self)


class _Released:
    """:meth:`HeldInterrupts.released`. A class, not a generator: a signal's handler that
    raised just after a generator's ``yield``, still inside ``__enter__``, left it
    suspended, the hold never taken again but at its garbage collection, in any thread."""

    __slots__ = ("_held",)

    def __init__(self, held: HeldInterrupts) -> None:
        self._held = held

    def __enter__(self) -> None:
        held = self._held
        if held._main and threading.get_ident() == _main_ident:
            try:
                held._release()
            except BaseException:
                held._hold()
                raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._held._main or threading.get_ident() != _main_ident:
            return  # (a generator holding this part, closed by the collector elsewhere)
        raised: BaseException | None = None
        for _ in range(64):  # held again whatever comes: what follows ends a commit
            try:
                self._held._hold()  # (the handlers as they are now: the part may set its own)
                break
            except BaseException as error:  # a signal that came, handled by its own handler
                raised = raised or error
        if raised is not None:
            raise raised


def start_thread(thread: threading.Thread) -> None:
    """``thread.start()``, signals held: a handler raising in it (``start()`` waits for the
    thread to begin) left the thread running, unknown to its owner, who took it for one
    never started and so never stopped or joined it."""
    with HeldInterrupts():
        thread.start()
