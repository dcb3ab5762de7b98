"""A queue for writers of one journal across processes, cheaper than SQLite's busy wait.

When SQLite finds the journal locked by another process's writer it sleeps 1, 2, 5, 10 ...
milliseconds between attempts; our write transactions last a few hundred microseconds, so
writers of several processes would spend most of their time asleep. Taking this lock first
(an ``flock`` on a file in ``orders.csv.backups/``) turns that into a short queue: a waiter
retries within microseconds, backing off to a tenth of a millisecond (a lock left idle
while its waiters sleep longer costs more claims than their polling costs CPU: when fsync
was fast, 4 processes claimed 1,750–2,000 rows/s at 50–200 µs against 1,000/s at 1 ms;
when it was slow, the same either way), and gives up with
:class:`~csvjournal.errors.JournalBusyError` after the busy timeout as before. It belongs to
the open file, so every :class:`WriterQueue` excludes the others, also in one process; a
thread lock excludes the threads sharing one. The lock goes with its process when it dies.

A handle that has met no other writer for a second skips the queue (:meth:`WriterQueue.begin`):
it tries SQLite's write lock at once, and only when that is taken does it queue, and keep
queueing while it keeps meeting others. A lone writer then pays no ``flock`` at all; a writer
that skips the queue can pass queued ones only at an instant when nobody holds the journal.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import structlog

from csvjournal._oslock import open_lock_file
from csvjournal._posix import fcntl
from csvjournal.errors import JournalBusyError

__all__ = ["GAVE_UP", "WriterQueue"]

_FIRST_WAIT = 10e-6
_LONGEST_WAIT = 1e-4
# After meeting another writer, queue first for this long: under contention the queue orders
# writers; without it, trying SQLite's lock first saves the two ``flock`` calls.
_CONTENDED_SECONDS = 1.0


# The message of a wait given up because its writers no longer want the write.
GAVE_UP = "gave up waiting for the journal: the writer stopped"
_CANCEL_SLICE = 0.1  # seconds between looks at a cancel, waiting for this process's turn
_CANCEL_EVERY = 1000  # tries between looks at a cancel, polling (at 100 µs: ~0.1 s)

log = structlog.get_logger(__name__)


class WriterQueue:
    """Exclusive access for one write transaction at a time, across processes."""

    def __init__(self, path: Path, busy_timeout: float, journal: Path) -> None:
        self.path = path
        self._journal = journal  # named in errors: the file the user knows
        self._busy_timeout = busy_timeout
        self._threads = threading.Lock()
        self._fd: int | None = None
        self._queue_until = 0.0  # monotonic time; before it, writers queue first
        self._unavailable = False  # the lock file could not be made: no queue

    def _file(self) -> int | None:
        """The queue's lock file, opened once; None when it cannot be made (the CSV's
        folder read-only, the journal kept elsewhere): writers then go without the queue,
        each retrying ``BEGIN IMMEDIATE`` until its turn (SQLite's lock keeps them apart,
        only the first-come order is lost)."""
        if self._fd is None and not self._unavailable:
            try:
                self._fd = open_lock_file(self.path)
            except OSError as exc:
                self._unavailable = True
                log.warning("writers_queue_unavailable", path=str(self.path), error=str(exc))
        return self._fd

    def begin(
        self, attempt: Callable[[], bool], cancelled: Callable[[], bool] | None = None
    ) -> bool:
        """Start a write transaction with ``attempt`` (``BEGIN IMMEDIATE``: True once it
        succeeded, False while the journal is busy) in this writer's turn.

        Tries at once when this handle met no other writer lately; else, or when that
        fails, waits for its turn in the queue and then retries quickly. Returns whether
        the queue is held: pass it to :meth:`end` once the transaction is over.
        ``cancelled()``, if given, says when to stop waiting.

        Raises:
            JournalBusyError: other writers kept the journal busy past the busy timeout
                (or the wait was cancelled).
        """
        self._take_threads(cancelled)
        try:
            if time.monotonic() >= self._queue_until:
                if attempt():
                    return False
                self._queue_until = time.monotonic() + _CONTENDED_SECONDS
            deadline = time.monotonic() + self._busy_timeout
            fd = self._file()
            if fd is None:
                self._poll(attempt, deadline, cancelled)
                return False
            waited = self._lock(fd, deadline, cancelled)
            try:
                waited = self._poll(attempt, deadline, cancelled) or waited
            except BaseException:
                fcntl.flock(fd, fcntl.LOCK_UN)
                raise
            if waited:
                self._queue_until = time.monotonic() + _CONTENDED_SECONDS
            return True
        except BaseException:
            self._threads.release()
            raise

    def end(self, queued: bool) -> None:
        """End the turn that :meth:`begin` started (after its COMMIT or ROLLBACK)."""
        try:
            if queued and self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def _take_threads(self, cancelled: Callable[[], bool] | None) -> None:
        """Take this process's turn among its threads (up to the busy timeout)."""
        if cancelled is None:
            taken = self._threads.acquire(timeout=self._busy_timeout)
        else:  # in slices, to see a cancel
            deadline = time.monotonic() + self._busy_timeout
            taken = False
            while not taken and time.monotonic() < deadline:
                if cancelled():
                    raise JournalBusyError(f"{self._journal}: {GAVE_UP}")
                taken = self._threads.acquire(timeout=_CANCEL_SLICE)
        if not taken:
            raise JournalBusyError(
                f"{self._journal}: other threads of this process kept the journal busy"
                f" for {self._busy_timeout:g} s"
            )

    def _lock(self, fd: int, deadline: float, cancelled: Callable[[], bool] | None = None) -> bool:
        """Take the queue's ``flock``; return whether we had to wait for it."""

        def take() -> bool:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        return self._poll(take, deadline, cancelled)

    def _poll(
        self,
        attempt: Callable[[], bool],
        deadline: float,
        cancelled: Callable[[], bool] | None = None,
    ) -> bool:
        """Retry ``attempt`` at 10 µs backing off to 100 µs until it succeeds; return
        whether it had to wait. Raises :class:`JournalBusyError` past ``deadline``, or
        once ``cancelled()`` (asked every 1,000 tries at most: ~0.1 s)."""
        wait = _FIRST_WAIT
        waited = False
        tries = 0
        while not attempt():
            if time.monotonic() >= deadline:
                raise self._busy()
            tries += 1
            if cancelled is not None and tries % _CANCEL_EVERY == 0 and cancelled():
                raise JournalBusyError(f"{self._journal}: {GAVE_UP}")
            waited = True
            time.sleep(wait)
            wait = min(wait * 2, _LONGEST_WAIT)
        return waited

    def _busy(self) -> JournalBusyError:
        return JournalBusyError(
            f"{self._journal}: journal still locked by other writers after {self._busy_timeout:g} s"
        )

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Wait for this writer's turn (up to the busy timeout) and hold it in the block.

        Raises:
            JournalBusyError: other writers kept it longer than the busy timeout.
        """
        deadline = time.monotonic() + self._busy_timeout
        if not self._threads.acquire(timeout=self._busy_timeout):
            raise JournalBusyError(
                f"{self._journal}: other threads of this process kept the journal busy"
                f" for {self._busy_timeout:g} s"
            )
        try:
            fd = self._file()
            if fd is None:  # (the caller's BEGIN IMMEDIATE waits for SQLite's lock)
                yield
                return
            self._lock(fd, deadline)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def close(self) -> None:
        """Close the lock file (not while a turn is held)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def forget(self) -> None:
        """In a forked child: drop the inherited descriptor without touching the lock
        (it is the parent's open file); a new one is opened when next needed."""
        self._fd = None
        self._threads = threading.Lock()
