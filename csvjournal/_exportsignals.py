"""What an exporter thread and the threads waiting on it tell each other: wake-ups, stops,
exports made, and exports a hand edit stopped (see :class:`ExportSignals`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from csvjournal.errors import CsvChangedError

__all__ = ["ExportSignals"]


class ExportSignals:
    """The exporter's state that other threads wait on, under one condition."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._stop = False
        self._woken = False
        self._forced = False  # export once more, whatever changed
        self.leading = False
        self.exported_seq = -1
        self.exports = 0  # how many exports this handle made
        # Set while a hand edit made during the run stops the exports (see CsvGuard).
        self.blocked: CsvChangedError | None = None
        self.last_failure: Exception | None = None  # disk full, a read-only folder, ...
        self.missed = 0  # exports tried and not put in place: failed, or stopped by an edit

    def wake(self) -> None:
        """Look for new commits now rather than at the next poll."""
        with self._changed:
            self._woken = True
            self._changed.notify_all()

    def export_again(self, timeout: float | None = None) -> bool:
        """Have the exporter thread export once more now, whatever changed; wait for it.
        False if it did not within ``timeout``, if the export failed (:attr:`last_failure`,
        :attr:`blocked`), or if it stopped leading."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            target = self.exports + 1
            missed = self.missed
            self._forced = self._woken = True
            self._changed.notify_all()
            while self.exports < target and self.leading and self.missed == missed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._changed.wait(0.05 if remaining is None else min(0.05, remaining))
        return self.exports >= target

    def wait_for(self, seq: int, timeout: float | None, alive: Callable[[], bool]) -> bool:
        """Wait until this exporter has written ``seq``; False on timeout, if it stopped,
        or if an export it tried meanwhile failed (:attr:`last_failure`) or a hand edit
        stopped it (:attr:`blocked`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            missed = self.missed
            while self.exported_seq < seq and alive() and self.missed == missed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._changed.wait(min(0.05, remaining) if remaining is not None else 0.05)
        return self.exported_seq >= seq

    def _stopped(self, seconds: float) -> bool:
        """Wait ``seconds``, or less if woken or stopped; return whether stopped."""
        with self._changed:
            self._changed.wait_for(lambda: self._stop or self._woken, seconds)
            self._woken = False
            return self._stop

    def _ask_to_stop(self) -> None:
        with self._changed:
            self._stop = True
            self._changed.notify_all()

    def _exported(self, seq: int) -> None:
        """An export showing ``seq`` is in place."""
        with self._changed:
            self.exported_seq = seq
            self.exports += 1
            self._forced = False
            self._changed.notify_all()

    def _missed(self, error: Exception) -> None:
        """An export was not put in place: it failed (the exporter tries again later), or
        the CSV was edited by hand (:class:`CsvChangedError`: :attr:`blocked`)."""
        with self._changed:
            if isinstance(error, CsvChangedError):
                self.blocked = error
            else:
                self.last_failure = error
            self.missed += 1
            self._changed.notify_all()
