"""Group commit: concurrent callers share one transaction and one fsync.

Leader/follower: a caller queues its item; if nobody is committing, it becomes the leader,
waits a few hundred microseconds for as many callers as the last group had, takes every
queued item and commits them together; the others sleep until their group is done. Each
caller still returns only after the commit holding its own item. A group whose commit fails
fails every caller in it with the same exception.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["GroupCommitter"]

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


class _Slot(Generic[_Item, _Result]):
    __slots__ = ("done", "error", "item", "result")

    def __init__(self, item: _Item) -> None:
        self.item = item
        self.result: _Result | None = None
        self.error: BaseException | None = None
        self.done = False

    def outcome(self) -> _Result:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


class GroupCommitter(Generic[_Item, _Result]):
    """Batch concurrent :meth:`submit` calls into calls of ``commit(items) -> results``.

    ``commit`` must run one transaction for all the items it is given and return one
    result per item, in order, or raise.
    """

    def __init__(
        self,
        commit: Callable[[Sequence[_Item]], Sequence[_Result]],
        *,
        gather_seconds: float = 0.0002,
    ) -> None:
        self._commit = commit
        self._gather_seconds = gather_seconds
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._finished = threading.Condition(self._lock)
        self._queue: list[_Slot[_Item, _Result]] = []
        self._leading = False
        self._expected = 1

    def submit(self, item: _Item) -> _Result:
        """Commit ``item`` (with whatever else is queued) and return its result.

        Raises:
            BaseException: whatever ``commit`` raised for the group holding ``item``.
        """
        slot: _Slot[_Item, _Result] = _Slot(item)
        with self._lock:
            self._queue.append(slot)
            if self._leading:
                self._arrived.notify()
                while self._leading and not slot.done:
                    self._finished.wait()
                if slot.done:
                    return slot.outcome()
            self._leading = True
        try:
            self._lead()
        finally:
            with self._lock:
                self._leading = False
                self._finished.notify_all()
        return slot.outcome()

    def _lead(self) -> None:
        with self._lock:
            if len(self._queue) < self._expected and self._gather_seconds > 0:
                deadline = time.monotonic() + self._gather_seconds
                while len(self._queue) < self._expected:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._arrived.wait(remaining)
            group, self._queue = self._queue, []
        try:
            results = self._commit([slot.item for slot in group])
        except BaseException as exc:
            error: BaseException | None = exc
            results = ()
        else:
            error = None
        with self._lock:
            for index, slot in enumerate(group):
                if error is None:
                    slot.result = results[index]
                else:
                    slot.error = error
                slot.done = True
            self._expected = len(group)
            self._finished.notify_all()
