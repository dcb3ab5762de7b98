"""What a group commit commits: record() calls validated by the group's leader, claims and
other :class:`~csvjournal._leases.Action`\\ s, in one write transaction.

:class:`Commits` belongs to one attached handle (a forked child attaches anew). The group's
leader validates every ``record()`` call of its group in one loop (see
:class:`~csvjournal._writer.RecordCall`); a call that fails validation is refused alone and
the rest of the group commits.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from itertools import repeat
from pathlib import Path
from typing import Any

import structlog

from csvjournal._groupcommit import Refused
from csvjournal._heldclaims import HeldClaims, ends
from csvjournal._leases import Action
from csvjournal._settings import Settings
from csvjournal._twins import may_twin, twin_problem
from csvjournal._values import timestamp_now
from csvjournal._writer import RecordCall, RecordOp, Writer, prepare_record
from csvjournal.csvio import EXCEL_MAX_CELL
from csvjournal.errors import JournalBusyError, JournalIOError, RecordError
from csvjournal.store import Store

__all__ = ["Commits", "Item"]

log = structlog.get_logger(__name__)

Item = RecordCall | Action


# How often a commit looks whether the journal is still the file this handle has open: a
# journal deleted or replaced by hand fails the commits from at most this long after.
_CHECK_SECONDS = 0.05


def _refusal(error: BaseException) -> Action:
    """An item that writes nothing and fails its own caller alone with ``error``."""
    return Action(lambda conn, writer: Refused(error))


def _lock_timeout(store: Store) -> JournalBusyError:
    # A thread that waits for good would hang for good on a block that awaits its write
    # (asyncio.to_thread inside batch()): bounded as another process's wait is.
    return JournalBusyError(
        f"{store.path}: journal still locked by another thread of this process after"
        f" {store.busy_timeout:g} s (a batch() block that long, or one waiting for this write)"
    )


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


class Commits:
    """Validation of ``record()`` calls and the write transaction of a group commit."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        writer: Writer,
        *,
        write_lock: threading.Lock,
        held: HeldClaims,
        csv_path: Path,
    ) -> None:
        self._store = store
        self._settings = settings
        self._writer = writer
        self._write_lock = write_lock
        self._held = held  # rows claimed through the handle
        self._csv_path = csv_path
        self._warned_cells = False
        self._identity = _identity(store.path)  # the file this handle writes to
        self._check_at = 0.0  # monotonic time of the next look at it after a commit
        self._lost: str | None = None  # once it was found deleted or replaced: why

    def prepare(self, call: RecordCall, at: str | None = None) -> RecordOp:
        """Validate a ``record()`` call, stamped ``at`` or now (see :func:`prepare_record`
        for what it raises; a :class:`RecordError` names the CSV)."""
        try:
            op = prepare_record(self._settings, call, at)
        except RecordError as exc:
            raise RecordError(f"{self._csv_path}: {exc}") from None
        cells = op.fields
        if cells and not self._warned_cells and max(map(len, cells.values())) > EXCEL_MAX_CELL:
            self._warned_cells = True
            log.warning("excel_cell_limit_exceeded", path=str(self._csv_path), key=op.key)
        return op

    def finished(self, ops: Sequence[RecordOp]) -> None:
        """Forget the claims of the handle that committed ``ops`` finish (nothing to give
        back)."""
        if self._held:
            self._held.note(ends(ops))

    def commit_group(self, calls: Sequence[Item]) -> list[object]:
        """Commit a group's items in one transaction; return one result per item, a
        :class:`Refused` for a call that failed validation (and, when the transaction
        fails, for the others too, with its error).

        Raises:
            JournalBusyError: other writers held the journal past the busy timeout (when
                no call was refused).
            BaseException: whatever else the transaction raised (the whole group failed).
        """
        if len(calls) == 1 and type(calls[0]) is RecordCall:  # a thread alone: no lists
            try:
                op = self.prepare(calls[0])
            except Exception as exc:
                return [Refused(exc)]
            lone = self._commit((op,))
            if self._held and type(lone[0]) is not Refused:  # refused: the claim holds
                self.finished((op,))
            return lone
        results: list[object] = []
        items: list[RecordOp | Action] = []
        at = timestamp_now()  # the group's records commit at one moment: one stamp
        for call in calls:
            try:
                item = call if isinstance(call, Action) else self.prepare(call, at)
            except Exception as exc:  # this call's own error: TypeError, RecordError
                results.append(Refused(exc))
            else:
                results.append(None)
                items.append(item)
        if items:
            try:
                committed = self._commit(items)
            except Exception as exc:
                if len(items) == len(calls):
                    raise  # the whole group fails with it
                # Calls refused already keep their own error (a TypeError stays one).
                done: Iterator[object] = repeat(Refused(exc))
            else:
                done = iter(committed)
                if self._held:  # a record refused in the transaction leaves its claim held
                    self.finished(
                        [
                            item
                            for item, result in zip(items, committed, strict=True)
                            if type(item) is RecordOp and type(result) is not Refused
                        ]
                    )
            results = [next(done) if r is None else r for r in results]
        return results

    def reentered(self, did: str = "wrote to the journal") -> JournalBusyError:
        """The error for a write (or a call that waits for one) from a signal handler run
        while its own thread commits (an impatient second Ctrl-C's): it would wait for
        that commit, under it, for good."""
        return JournalBusyError(
            f"{self._csv_path}: a signal handler {did} while its thread was committing (a"
            " Ctrl-C pressed twice while the journal was busy): it would wait for that"
            " commit, which waits for the handler to return"
        )

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the handle's write lock, waiting for another thread's commit or
        ``batch()`` block up to the busy timeout.

        Raises:
            JournalBusyError: another thread held it longer than the busy timeout.
        """
        if not self._write_lock.acquire(timeout=self._store.busy_timeout):
            raise _lock_timeout(self._store)
        try:
            yield
        finally:
            self._write_lock.release()

    def _commit(self, items: Sequence[RecordOp | Action]) -> list[object]:
        writer = self._writer
        store = self._store
        if not self._write_lock.acquire(timeout=store.busy_timeout):  # (inline: every commit)
            raise _lock_timeout(store)
        try:
            if self._lost is not None:  # for good: the handle writes to a file no one reads
                raise JournalIOError(self._lost)
            conn = store.writer()
            if conn.in_transaction:  # left open by an exception an application's signal
                conn.execute("ROLLBACK")  # handler raised mid-commit: nothing of it holds
            queued = store.begin_writer(conn, _abandoned(items))
            mark = None
            try:
                mark = writer.begin(conn)  # (reads the journal: it may fail as any statement)
                results = self._apply(conn, items)
                conn.execute("COMMIT")
                if (now := time.monotonic()) >= self._check_at:  # a stat costs a record 4%
                    self._check_at = now + _CHECK_SECONDS
                    self.check_journal()
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if mark is not None:
                    writer.restore(mark)
                if isinstance(exc, sqlite3.Error):  # a new, empty file in its place, say
                    self.check_journal()
                raise
            finally:
                store.end_writer(queued)
        finally:
            self._write_lock.release()
        return results

    def _apply(self, conn: sqlite3.Connection, items: Sequence[RecordOp | Action]) -> list[object]:
        """Write ``items`` in the open transaction; their results, in order."""
        writer = self._writer
        if writer.formula_guard:
            items = self._refuse_twins(conn, items)
        if len(items) == 1 and type(items[0]) is RecordOp:  # SQLite numbers it
            writer.apply(conn, items)  # type: ignore[arg-type]
            return [items[0].seq]
        if type(items[0]) is RecordOp and all(type(i) is RecordOp for i in items):
            ops: Sequence[RecordOp] = items  # type: ignore[assignment]
            for op in ops:
                writer.allocate(conn, op)
            writer.apply(conn, ops)
            return [op.seq for op in ops]
        return [
            item.run(conn, writer) if isinstance(item, Action) else self._apply_one(conn, item)
            for item in items
        ]

    def _refuse_twins(
        self, conn: sqlite3.Connection, items: Sequence[RecordOp | Action]
    ) -> Sequence[RecordOp | Action]:
        """``items`` with each record that would make a row or a column the formula guard
        shows as it shows another (see :func:`~csvjournal._twins.twin_problem`) replaced by its
        refusal."""
        ops = [item if type(item) is RecordOp else item.op for item in items]  # type: ignore[union-attr]
        if not any(op is not None and may_twin(op) for op in ops):
            return items
        fresh: tuple[set[str], set[str]] = (set(), set())
        kept: list[RecordOp | Action] = []
        for item, op in zip(items, ops, strict=True):
            problem = None
            if op is not None:
                problem = twin_problem(conn, op, self._writer.columns.index, fresh)
            kept.append(item if problem is None else _refusal(self.twin_error(problem)))
        return kept

    def twin_error(self, problem: str) -> RecordError:
        """The error refusing a record for ``problem`` (see ``_twins.twin_problem``)."""
        return RecordError(
            f"{self._csv_path}: {problem}, with the formula guard on (a merge of the CSV"
            " could not tell them apart)"
        )

    def check_journal(self) -> None:
        """After a commit: the journal at its path must still be the file this handle has
        open. Deleted or replaced meanwhile (by hand, by a copied backup), the commit went
        into a file no one will read again: its callers must hear that it is lost.

        Raises:
            JournalIOError: the journal file is not there, or is another file.
        """
        if self._lost is None and _identity(self._store.path) != self._identity:
            self._lost = (
                f"{self._store.path}: the journal was deleted or replaced while this process"
                " had it open; what was recorded since may not be in it (stop every worker,"
                " then restore a backup or open the journal anew)"
            )
        if self._lost is not None:
            raise JournalIOError(self._lost)

    def _apply_one(self, conn: Any, op: RecordOp) -> int:
        seq = self._writer.allocate(conn, op)
        self._writer.apply(conn, [op])
        return seq


def _abandoned(items: Sequence[RecordOp | Action]) -> Callable[[], bool] | None:
    """Whether to stop waiting for a busy journal: only for a group of actions that may be
    abandoned (claims of work loops), once every one of them is (see ``Action.abandon``)."""
    if type(items[0]) is RecordOp:  # the usual group: records, never abandoned
        return None
    events = [item.abandon for item in items if isinstance(item, Action)]
    if len(events) != len(items) or any(event is None for event in events):
        return None
    return lambda: all(event is not None and event.is_set() for event in events)
