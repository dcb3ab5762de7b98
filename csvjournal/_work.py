"""The worker loop for library users: claim a row, run the body, renew the lease meanwhile.

``journal.work()`` claims one row at a time and yields it as a :class:`Task`. A background
thread renews the current task's lease every third of the lease, so a long body never loses
its row while its process lives; a process that dies stops renewing, the lease runs out and
another worker takes the row over. Used as a context manager, a task finishes itself: a body
that returns without recording records ``success_status``; a body that raises an
``Exception`` records ``FAILED`` with ``ERROR_MESSAGE`` (the exception is logged and the loop
goes on); ``KeyboardInterrupt`` and the like give the row back to ``PENDING`` and propagate.
A ``break`` or ``return`` inside the block leaves it normally, so it records
``success_status`` too; :meth:`Task.release` first gives the row back instead.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Protocol

import structlog

from csvjournal._interrupts import start_thread
from csvjournal._writer import IN_PROGRESS
from csvjournal.errors import JournalBusyError, JournalClosedError, RecordError

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["Task", "work"]

log = structlog.get_logger(__name__)

FAILED = "FAILED"
_IDLE_POLL_SECONDS = 0.25


class _Journal(Protocol):
    def _claim(
        self,
        n: int,
        lease: float,
        name: str,
        max_attempts: int | None,
        abandon: threading.Event | None,
    ) -> list[str]: ...
    def extend(self, keys: list[str], lease: float, *, worker: str | None = ...) -> list[str]: ...
    def release(
        self, keys: list[str], note: str = ..., *, worker: str | None = ...
    ) -> list[str]: ...
    def _record_outcome(
        self,
        key: str,
        worker: str,
        status: str | None,
        fields: Mapping[str, object] | None,
        more: Mapping[str, object],
    ) -> int | None: ...
    def next_lease_end(self, max_attempts: int | None = None) -> float | None: ...
    def _refuse_in_batch(self, name: str) -> None: ...
    def _in_batch(self) -> bool: ...
    def _event_committed(self, seq: int) -> bool: ...
    @property
    def settings(self) -> _Settings: ...


class _Settings(Protocol):
    @property
    def status_column(self) -> str: ...
    @property
    def dialect(self) -> _Dialect: ...


class _Dialect(Protocol):
    @property
    def encoding(self) -> str: ...


def error_line(exc: BaseException, encoding: str = "utf-8") -> str:
    """A one-line ``ERROR_MESSAGE`` for ``exc``: its type and first non-empty line, in
    what ``encoding`` can write ('?' for the rest: a lone surrogate from a file name, "→"
    in a cp1252 sheet), so that recording it cannot fail."""
    try:
        text = str(exc)
    except Exception:
        text = ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return line.encode(encoding, "replace").decode(encoding)


class Task:
    """One claimed row of :meth:`Journal.work`: its ``key``, and a block that finishes it.

    ``finished`` tells whether the row was given a status other than ``IN_PROGRESS`` (or
    given back); ``lost`` whether its lease was taken over by another worker meanwhile.
    """

    def __init__(
        self,
        journal: _Journal,
        key: str,
        worker: str,
        success_status: str,
        *,
        status_column: str | None = None,
        encoding: str | None = None,
    ) -> None:
        self.key = key
        self.worker = worker
        self.finished = False
        self.finishing = False  # a record that finishes it is being committed
        self._in_block: int | None = None  # the record that finished it, inside a batch()
        self.lost = False
        self._journal = journal
        self._success_status = success_status
        # fixed at the journal's creation: read once, not at every record
        if status_column is None or encoding is None:
            settings = journal.settings
            status_column, encoding = settings.status_column, settings.dialect.encoding
        self._status_column = status_column
        self._encoding = encoding

    def record(
        self, status: str | None = None, fields: Mapping[str, object] | None = None, **more: object
    ) -> int | None:
        """``journal.record(task.key, ...)``; a status other than ``IN_PROGRESS`` finishes
        the task. Returns the event's sequence number, or None when nothing was recorded:
        the lease ran out, another worker took the row over and finished it, and this late
        outcome would move it back to an unfinished status (the task is then ``lost`` and
        finished). A late terminal outcome is recorded after theirs.

        Raises:
            RecordError: the task is finished already (its outcome recorded, or its row
                given back): ``journal.record()`` changes the row further.
            the errors of :meth:`Journal.record`.
        """
        if self.finished and not self.lost and not self._reopened():
            raise RecordError(
                f"{self.key}: this task is finished already (its outcome is recorded, or its"
                " row given back); journal.record() changes the row further"
            )
        # The status may come as the status column among the fields, in either mapping.
        named = {**(fields or {}), **more}
        given = status if status is not None else named.get(self._status_column)
        # Said before the commit: the renewer, finding the row finished under it before
        # this call returned, must not take the task for lost.
        self.finishing = given is not None and given != IN_PROGRESS
        try:
            seq = self._journal._record_outcome(self.key, self.worker, status, fields, more)
        finally:
            self.finishing = False
        if seq is None:
            self.lost = self.finished = True
            log.warning("task_outcome_dropped", key=self.key, worker=self.worker, status=given)
        elif given is not None and given != IN_PROGRESS:
            self.finished = True
            self._in_block = seq if self._journal._in_batch() else None
        return seq

    def fail(self, message: str, **more: object) -> int | None:
        """Record ``FAILED`` with ``ERROR_MESSAGE`` = ``message`` (and any other fields)."""
        return self.record(FAILED, fields={"ERROR_MESSAGE": message}, **more)

    def release(self) -> None:
        """Give the row back to ``PENDING`` unfinished (the attempt is not counted)."""
        self._journal.release([self.key], worker=self.worker)
        self.finished = True

    def __enter__(self) -> Task:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if self.finished and not self._undone(exc):
            return exc is not None and isinstance(exc, Exception) and self._log_after(exc)
        if exc is None:
            self.record(self._success_status)
            return False
        if isinstance(exc, Exception):
            log.warning("task_failed", key=self.key, worker=self.worker, error=error_line(exc))
            log.debug("task_failed_traceback", key=self.key, exc_info=exc)
            self.fail(error_line(exc, self._encoding))
            return True
        # KeyboardInterrupt, SystemExit: not the row's fault. A handler that closed the
        # journal first (SIGTERM: close, exit) gave the row back: its exit goes on.
        with contextlib.suppress(JournalClosedError):
            self.release()
        return False

    def _undone(self, exc: BaseException | None) -> bool:
        """Whether the record that finished the task was made in a ``batch()`` block that
        was undone (by ``exc``, or by an error the body caught): then it is unfinished."""
        seq, self._in_block = self._in_block, None
        if seq is None or (exc is not None and self._journal._in_batch()):
            return False
        if self._journal._event_committed(seq):
            return False
        self.finished = False
        return True

    def _reopened(self) -> bool:
        """Whether the record that finished the task was undone with its ``batch()`` block
        (or savepoint) since: then the task is unfinished again, and may record."""
        if self._in_block is None or self._journal._event_committed(self._in_block):
            return False
        self._in_block = None
        self.finished = False
        return True

    def _log_after(self, exc: Exception) -> bool:
        # The body recorded a status and then raised: its record stands.
        log.warning("task_raised_after_recording", key=self.key, exc_info=exc)
        return True

    def __repr__(self) -> str:
        return f"<Task {self.key!r} {'finished' if self.finished else 'running'}>"


class _Renewer:
    """Renews the lease of the current task every third of the lease, in a thread."""

    def __init__(self, journal: _Journal, lease: float) -> None:
        self._journal = journal
        self._lease = lease
        self._task: Task | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="csvjournal-renewer", daemon=True)
        start_thread(self._thread)

    def watch(self, task: Task | None) -> None:
        with self._lock:
            self._task = task

    def _run(self) -> None:
        while not self._stop.wait(self._lease / 3):
            with self._lock:
                task = self._task
                if task is None or task.finished or task.finishing:
                    continue
                try:
                    renewed = self._journal.extend([task.key], self._lease, worker=task.worker)
                except JournalClosedError:  # a loop left unfinished, its journal closed
                    return
                except Exception as exc:  # the next round tries again
                    log.warning("lease_renewal_failed", key=task.key, error=str(exc))
                    continue
                if not renewed and not (task.finished or task.finishing):
                    task.lost = True
                    log.warning("lease_lost", key=task.key, worker=task.worker)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def work(
    journal: _Journal,
    *,
    lease: float,
    worker: str,
    max_attempts: int | None,
    success_status: str,
    stop: threading.Event | None,
) -> Iterator[Task]:
    """Yield claimed rows as :class:`Task` until none is left to do, or ``stop`` is set.

    When nothing can be claimed but rows are still leased by other workers (which may fail
    them, or die and lose them), it waits for them rather than ending early. A task the loop
    body left unfinished is finished with ``success_status`` at the next iteration (the
    body returned normally); if the loop is left early (``break``, an exception), the
    current unfinished row is given back to ``PENDING``.
    """
    journal._refuse_in_batch("work")
    settings = journal.settings
    status_column, encoding = settings.status_column, settings.dialect.encoding
    renewer = _Renewer(journal, lease)
    task: Task | None = None

    def claim() -> list[str]:
        journal._refuse_in_batch("work")  # (the loop's next row, in a block opened since)
        try:  # a claim waiting for a journal other processes keep busy gives up at a stop
            return journal._claim(1, lease, worker, max_attempts, stop)
        except JournalBusyError:
            if stop is not None and stop.is_set():
                return []
            raise

    try:
        while stop is None or not stop.is_set():
            keys = claim()
            if not keys and stop is not None and stop.is_set():
                return
            if not keys:
                end = journal.next_lease_end(max_attempts)
                if end is not None:
                    wait = min(_IDLE_POLL_SECONDS, max(0.0, end - time.time()))
                    if stop is not None:
                        stop.wait(wait)
                    else:
                        time.sleep(wait)
                    continue
                # A lease that ran out between the claim and that look is not in it: one
                # more claim before ending, or its row would be left behind.
                keys = claim()
                if not keys:
                    return
            task = Task(
                journal,
                keys[0],
                worker,
                success_status,
                status_column=status_column,
                encoding=encoding,
            )
            renewer.watch(task)
            yield task
            renewer.watch(None)
            if not task.finished or task._reopened():  # (its outcome undone with a block)
                task.record(success_status)
            task = None
    finally:
        try:
            renewer.stop()  # (a signal handler may raise while it joins)
        finally:
            if task is not None and not task.finished:
                # closed first: close() gave the row back already
                with contextlib.suppress(JournalClosedError):
                    task.release()
