"""The rows claimed through one handle, as far as that handle knows: what ``close()`` gives
back, and what ``extend()``/``release()`` act on by default.

Each claim is kept with the sequence number of the event that made it, and each end of
claims (a record that finishes the row, a release) carries the sequence number of its own
event. The threads of a handle note their commits one after another, in whatever order
they get there, but the sequence numbers say the order the journal committed them in: an
end removes only the claims made before it, never the claim another thread made of the
same row just after (the row offered again at once, a failed one say). A claim noted after
a later end is kept, though the journal ended it: it holds nothing there, and every use of
it (renewing, giving back) finds so in the journal.

A thread also remembers its newest claims that ended (up to :data:`ENDED_KEPT` rows), so
that its late ``release()`` or ``extend()`` of such a row acts on nothing rather than on the
claim another thread has made of the row since: the default for a thread that never
claimed the row stays the row's newest claim.

Inside a ``batch()`` block, a claim is noted at once (``extend()``, ``release()`` and
``close()`` act on it before the block ends) and taken back if its block is undone; the
ends wait in the block (see :class:`~csvjournal._batch.BatchState`) and are noted only
if it commits.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from csvjournal._writer import IN_PROGRESS, RecordOp

__all__ = ["ENDED_KEPT", "Change", "HeldClaims", "ends"]

ENDED_KEPT = 4096  # rows whose ended claims a thread remembers; a bound, as threads live long


@dataclass(frozen=True, slots=True)
class Change:
    """One committed change to a handle's claims: ``worker`` claimed ``key`` (``claimed``),
    or its claim was given back (``worker`` set, not ``claimed``), or every claim on the
    row made before event ``seq`` ended (``worker`` None: the row was finished)."""

    key: str
    seq: int
    worker: str | None = None
    claimed: bool = False
    thread: threading.Thread | None = None


def ends(ops: Iterable[RecordOp]) -> list[Change]:
    """The ends of claims that ``ops`` (numbered) make: each one that finishes its row, a
    status other than ``IN_PROGRESS``, ends every claim on it made before it."""
    return [
        Change(op.key, op.seq)
        for op in ops
        if op.status not in (None, IN_PROGRESS) and op.seq is not None
    ]


class HeldClaims:
    """``key -> {worker: (the thread that claimed, the claim's sequence number)}``, the
    newest claim of a row last; safe to use from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, dict[str, tuple[threading.Thread | None, int]]] = {}
        # thread -> the rows it claimed whose claims ended, the newest last
        self._ended: weakref.WeakKeyDictionary[threading.Thread, OrderedDict[str, None]]
        self._ended = weakref.WeakKeyDictionary()
        # (key, worker, seq) of a claim noted in a block -> the claim it replaced, put back
        # if the block is undone (the worker's earlier claim of the row, lapsed, say)
        self._replaced: dict[tuple[str, str, int], tuple[threading.Thread | None, int]] = {}

        self._claiming = 0  # claims under way: committing, not noted yet
        self._claimed = threading.Condition(self._lock)

    def __bool__(self) -> bool:
        return bool(self._held)

    @contextmanager
    def claiming(self) -> Iterator[None]:
        """A claim under way, from before its commit until it is noted (see
        :meth:`wait_for_claims`)."""
        with self._lock:
            self._claiming += 1
        try:
            yield
        finally:
            with self._lock:
                self._claiming -= 1
                self._claimed.notify_all()

    def wait_for_claims(self, timeout: float) -> bool:
        """Wait until no claim is under way (``close()``: none takes a row once it began,
        and what those under way took is given back with the rest); False if ``timeout``
        seconds passed first."""
        with self._lock:
            return self._claimed.wait_for(lambda: not self._claiming, timeout)

    def note_block(self, items: list[RecordOp | Change]) -> None:
        """Apply what a committed ``batch()`` block did, in order: its changes, and the
        ends its records make (looked at only when there are claims to end)."""
        if self._held or any(type(item) is Change for item in items):
            self.note(
                change
                for item in items
                for change in (ends((item,)) if isinstance(item, RecordOp) else (item,))
            )
        if self._replaced:
            with self._lock:
                for item in items:
                    if type(item) is Change and item.claimed and item.worker is not None:
                        self._replaced.pop((item.key, item.worker, item.seq), None)

    def unnote(self, items: list[RecordOp | Change]) -> None:
        """Take back the claims among ``items`` (noted at once in a ``batch()`` block
        that is now undone): each one that is still the one noted."""
        with self._lock:
            for item in reversed(items):
                if type(item) is not Change or not item.claimed:
                    continue
                assert item.worker is not None
                before = self._replaced.pop((item.key, item.worker, item.seq), None)
                holders = self._held.get(item.key)
                if holders is None or holders.get(item.worker, (None, -1))[1] != item.seq:
                    continue
                if before is not None:  # the claim it replaced holds the row again
                    holders[item.worker] = before
                    continue
                del holders[item.worker]
                if not holders:
                    del self._held[item.key]

    def note(self, changes: Iterable[Change], *, in_block: bool = False) -> None:
        """Apply committed ``changes``, in the order given (``in_block``: claims made in
        a ``batch()`` block, which :meth:`unnote` may take back)."""
        with self._lock:
            for change in changes:
                holders = self._held.get(change.key)
                if change.claimed:
                    assert change.worker is not None
                    if holders is None:
                        holders = self._held[change.key] = {}
                    before = holders.pop(change.worker, None)  # the newest claim last
                    if in_block and before is not None:
                        self._replaced[(change.key, change.worker, change.seq)] = before
                    holders[change.worker] = (change.thread, change.seq)
                    ended = None if change.thread is None else self._ended.get(change.thread)
                    if ended is not None:
                        ended.pop(change.key, None)
                elif holders is not None:
                    for name, (by, seq) in list(holders.items()):
                        if seq < change.seq and change.worker in (None, name):
                            del holders[name]
                            if by is not None:
                                self._note_ended(by, change.key)
                    if not holders:
                        del self._held[change.key]

    def _note_ended(self, thread: threading.Thread, key: str) -> None:
        ended = self._ended.get(thread)
        if ended is None:
            ended = self._ended[thread] = OrderedDict()
        ended[key] = None
        ended.move_to_end(key)
        if len(ended) > ENDED_KEPT:
            ended.popitem(last=False)

    def holders(
        self, keys: Iterable[str], worker: str | None, thread: threading.Thread
    ) -> list[tuple[str, str]]:
        """``(key, claimer)`` for each of ``keys`` claimed through the handle: ``worker``'s
        claim if given, else the newest ``thread`` made, else (when ``thread`` has no claim
        of the row that ended lately) the newest. A late worker's thread so names its own
        claim, never the one another thread took over."""
        found = []
        with self._lock:
            ended = self._ended.get(thread) or OrderedDict()
            for key in keys:
                holders = self._held.get(key)
                if not holders:
                    continue
                if worker is not None:
                    if worker in holders:
                        found.append((key, worker))
                    continue
                mine = [name for name, (by, _) in holders.items() if by is thread]
                if mine or key not in ended:
                    found.append((key, (mine or list(holders))[-1]))
        return found

    def every(self) -> list[tuple[str, str]]:
        """Every ``(key, worker)`` claim noted and not ended."""
        with self._lock:
            return [(key, name) for key, holders in self._held.items() for name in holders]
