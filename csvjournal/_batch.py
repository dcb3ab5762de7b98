"""One thread's open ``batch()``: a write transaction with savepoints and buffered records.

Records inside a batch get their sequence number at once and are written in bulk when the
buffer fills, at a savepoint boundary, before a read from the same thread, and at commit.
A full buffer is written by another thread while the block goes on (see
:mod:`csvjournal._bulk`); anything else that uses the block's connection waits for it first.
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy import Connection

from csvjournal._bulk import bulk_write
from csvjournal._heldclaims import Change
from csvjournal._schema import driver
from csvjournal._twins import may_twin, twin_problem
from csvjournal._writer import RecordOp, Writer
from csvjournal.errors import BatchOpenError

if TYPE_CHECKING:
    from types import TracebackType

    from csvjournal._interrupts import HeldInterrupts
    from csvjournal._leases import Action

__all__ = ["BatchState", "Block", "foreign_batch_error"]

T = TypeVar("T")

# The blocks open in this context: an asyncio task's (or a thread's) own. Batches are kept
# per thread; a task switch inside a block would let another task's records into it.
_OPEN_HERE: ContextVar[tuple[BatchState, ...]] = ContextVar("csvjournal_batches", default=())

_FLUSH_EVERY = 5000


def _opening() -> object:
    return True  # (a block being opened: not abandoned)


class BatchState:
    """The transaction of one thread's outermost ``batch()`` block and its nested ones.

    ``errors`` makes SQLite's errors met by csvjournal's own statements csvjournal's (see
    :func:`~csvjournal._dberrors.journal_errors`); an error raised by the block itself,
    whatever it is, passes as it is.
    """

    def __init__(
        self,
        conn: Connection,
        writer: Writer,
        errors: Callable[[], AbstractContextManager[None]],
        committed: Callable[[list[RecordOp | Change]], None],
        twin_error: Callable[[str], Exception],
        *,
        undone: Callable[[list[RecordOp | Change]], None],
        reentered: Callable[[], Exception],
    ) -> None:
        self.conn = conn
        # Until its transaction has begun (it may wait for a busy journal): a signal's
        # handler that writes meanwhile would write outside it (its reads go elsewhere).
        self.beginning = True
        self._reentered = reentered
        self._twin_error = twin_error  # refuses a new row shown as another (formula guard)
        self._writer = writer
        self._errors = errors
        self._committed = committed  # told the claims' changes once the outermost block commits
        self._undone = undone  # told them when the block that made them is undone
        self._raw = driver(conn)
        self._buffer: list[RecordOp] = []
        self._spilling: threading.Thread | None = None  # writing records, the block going on
        self._spill_error: BaseException | None = None
        # What writing queued records raised (or what cut it short): the block cannot
        # commit without them, so it fails from then on (a nested one until undone).
        self._failed: BaseException | None = None
        self.owner: Callable[[], object] = _opening  # the Block, once open (see own)
        self._ending: tuple[AbstractContextManager[Any], AbstractContextManager[None]] | None = None
        # records and changes to the handle's claims, in blocks not undone (so far)
        self._recorded: list[RecordOp | Change] = []

    def own(
        self,
        block: Block[Any],
        inner: AbstractContextManager[Any],
        released: AbstractContextManager[None],
    ) -> None:
        """``block`` holds this outermost block open: ``inner`` ends it, signals held again
        by ``released``."""
        self.owner = weakref.ref(block)
        self._ending = (inner, released)

    def abandoned(self) -> bool:
        """Whether the block's ``with`` statement is over though its ``__exit__`` never ran
        (see :meth:`end_abandoned`): its :class:`Block` is gone, or the exception being
        handled now came out of that ``__exit__`` (a record in the ``except`` clause
        around the block, the block still referenced by the exception's traceback)."""
        owner = self.owner()
        if owner is None:
            return True
        exc = sys.exception()
        tb = None if exc is None else exc.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            if frame.f_code is _BLOCK_EXIT and frame.f_locals.get("self") is owner:
                return True
            tb = tb.tb_next
        return False

    def end_abandoned(self) -> None:
        """Undo the block, its :class:`Block` gone without its ``__exit__`` having run:
        Python runs signal handlers as any function begins, and one that raised as the
        ``with`` statement called ``__exit__`` left the block open, the write lock held.
        That exception came out of the block: none of its records stands.

        Raises:
            the exceptions of the handlers of signals that came meanwhile."""
        if self._ending is None:
            return
        (inner, released), self._ending = self._ending, None
        try:
            released.__exit__(None, None, None)  # signals held while it ends (may raise:
        finally:  # a handler, as the hold began; the block ends all the same)
            cut = _EndCutShort("the end of this batch() block was cut short by a signal's handler")
            with suppress(_EndCutShort):
                inner.__exit__(_EndCutShort, cut, None)

    @contextmanager
    def open_here(self) -> Iterator[None]:
        """The block is open in this context (see :meth:`here`) while the ``with`` lasts."""
        token = _OPEN_HERE.set((*_OPEN_HERE.get(), self))
        try:
            yield
        finally:
            try:
                _OPEN_HERE.reset(token)
            except ValueError:  # (the block was left in another context than its own)
                _OPEN_HERE.set(tuple(state for state in _OPEN_HERE.get() if state is not self))

    def here(self) -> bool:
        """Whether this block was opened in the running context: not in another asyncio
        task of its thread, or a callback the event loop runs meanwhile."""
        return self in _OPEN_HERE.get()

    def add(self, op: RecordOp) -> int:
        """Queue one record; return its sequence number.

        Raises:
            RecordError: with the formula guard on, ``op`` would make a row that the CSV
                shows as it shows another (see ``_twins``); nothing is queued.
            JournalBusyError: a signal's handler, run while the block begins.
        """
        if self.beginning:
            raise self._reentered()
        if self._failed is not None:
            raise self._failed
        self._refuse_twin(op)
        if not self._writer.numbering:
            self.settle()  # (allocate looks up the journal's last number)
        seq = self._writer.allocate(self._raw, op)
        self._buffer.append(op)
        self._recorded.append(op)  # (a record ends claims only if it finishes its row)
        if len(self._buffer) >= _FLUSH_EVERY:
            self._spill()
        return seq

    def _spill(self) -> None:
        """Have another thread write the queued records while the block goes on, where
        that pays (else write them here)."""
        with self._writing():
            ops, self._buffer = self._buffer, []
            # (made while the last records are written: only a new column waits for them)
            write = bulk_write(self._writer, self._raw, ops, self.settle)
            self.settle()
            if write is None:
                self._writer.apply(self._raw, ops)
                return
        thread = threading.Thread(
            target=self._spilled, args=(write,), name="csvjournal-batch-writer", daemon=True
        )
        self._spilling = thread
        thread.start()

    def _spilled(self, write: Callable[[], None]) -> None:
        try:
            write()
        except BaseException as exc:  # raised in the block's thread, by settle()
            self._spill_error = exc

    def settle(self, *, quietly: bool = False) -> None:
        """Wait until records written by another thread are written; raise what writing
        them raised (unless ``quietly``: the block is being undone)."""
        thread = self._spilling
        if thread is None:
            return
        thread.join()
        self._spilling = None
        error, self._spill_error = self._spill_error, None
        if error is not None and not quietly:
            self._failed = error
            raise error

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Queued records are written in the block: what raises there (an interrupt too)
        leaves some unwritten, and fails the block from then on."""
        if self._failed is not None:
            raise self._failed
        try:
            yield
        except BaseException as exc:
            self._failed = exc
            raise

    def _refuse_twin(self, op: RecordOp) -> None:
        if self._writer.formula_guard and may_twin(op):
            self.flush()  # the other row or column may be among the queued records
            problem = twin_problem(self._raw, op, self._writer.columns.index)
            if problem is not None:
                raise self._twin_error(problem)

    def track(self, changes: Iterable[Change]) -> None:
        """Note these changes to the handle's claims (made by an :class:`Action` of the
        block) when the block commits (its claims are noted at once too: see
        ``HeldClaims``), or undo them if it is undone."""
        self._recorded += changes

    def flush(self) -> None:
        """Write the queued records into the open transaction (and wait for those another
        thread writes)."""
        with self._writing():
            self.settle()
            if self._buffer:
                ops, self._buffer = self._buffer, []
                self._writer.apply(self._raw, ops)

    def run(self, action: Action) -> object:
        """Run a claim, release or other :class:`Action` in the open transaction.

        Raises:
            RecordError: the record the action writes is refused (see :meth:`add`).
            JournalBusyError: a signal's handler, run while the block begins.
        """
        if self.beginning:
            raise self._reentered()
        self.flush()
        if action.op is not None:
            self._refuse_twin(action.op)
        return action.run(self._raw, self._writer)

    @contextmanager
    def transaction(self, before_commit: Callable[[], None]) -> Iterator[None]:
        """The outermost block: ``BEGIN IMMEDIATE`` ... ``COMMIT`` (or rollback if it
        raises, ``before_commit`` too: the handler of a signal held off, say)."""
        with self._errors():
            tx = self.conn.begin()
        mark = self._writer.begin(self._raw)
        self.beginning = False
        try:
            yield
            with self._errors():
                self.flush()
            before_commit()
            with self._errors():
                self.flush()  # what a handler that ran there recorded
                tx.commit()
        except BaseException:
            self.settle(quietly=True)
            self._buffer.clear()
            recorded, self._recorded = self._recorded, []
            self._undone(recorded)
            if tx.is_active:
                tx.rollback()
            self._writer.restore(mark)
            raise
        recorded, self._recorded = self._recorded, []
        self._committed(recorded)

    @contextmanager
    def savepoint(self, before_release: Callable[[], None]) -> Iterator[None]:
        """A nested block: a SAVEPOINT whose records alone are undone if it raises (or
        ``before_release`` does).

        Raises:
            JournalBusyError: a signal's handler, run while the outer block begins.
        """
        if self.beginning:
            raise self._reentered()
        with self._errors():
            self.flush()
            savepoint = self.conn.begin_nested()
        mark, recorded = self._writer.mark(), len(self._recorded)
        try:
            yield
            with self._errors():
                self.flush()
            before_release()
            with self._errors():
                self.flush()  # what a handler that ran there recorded
        except BaseException:
            self.settle(quietly=True)
            self._failed = None  # (what failed was this block's: flush() had passed)
            self._buffer.clear()
            self._undone(self._recorded[recorded:])
            del self._recorded[recorded:]
            savepoint.rollback()
            self._writer.restore(mark)
            raise
        with self._errors():
            savepoint.commit()


def foreign_batch_error(path: object) -> BatchOpenError:
    """The error for a write from this thread while a block of another task is open in it."""
    return BatchOpenError(
        f"{path}: another asyncio task (or code the event loop ran meanwhile) of this thread"
        " has a batch() block open: its records would join that block. Blocks are per"
        " thread: do not await inside one (nor wait there for another thread's write: it"
        " waits for the block, then fails with JournalBusyError), or run each whole block"
        " in a thread (asyncio.to_thread)"
    )


class _EndCutShort(Exception):
    """What a block whose ``__exit__`` never ran is ended with (see
    :meth:`BatchState.end_abandoned`)."""


class Block(Generic[T]):
    """A ``batch()`` block: ``inner`` opens and ends it with signals held (it yields its
    :class:`~csvjournal._interrupts.HeldInterrupts`); the block's own body gets them as they
    come. A class, not a generator: a signal's handler that raised after a generator's
    ``yield``, still in ``__enter__``, left the block open and registered for good (only
    the garbage collector, in any thread, ended it)."""

    __slots__ = ("__weakref__", "_inner", "_released", "_value")

    def __init__(
        self,
        inner: AbstractContextManager[tuple[HeldInterrupts, BatchState | None]],
        value: T,
    ) -> None:
        self._inner = inner
        self._value = value

    def __enter__(self) -> T:
        if hasattr(self, "_released"):
            raise RuntimeError("a batch() block is entered once: call journal.batch() again")
        held, state = self._inner.__enter__()
        # (all but the release with signals held: a handler may raise as any call begins)
        self._released = released = held.released()
        if state is not None:  # the outermost block
            state.own(self, self._inner, released)
        try:
            released.__enter__()  # (signals that came meanwhile run here: may raise)
        except BaseException as exc:
            self._inner.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self._value

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        try:
            self._released.__exit__(exc_type, exc, tb)  # signals held again
        except BaseException as raised:  # a handler, as the hold began: the block raised it
            self._inner.__exit__(type(raised), raised, raised.__traceback__)
            raise
        return self._inner.__exit__(exc_type, exc, tb)


_BLOCK_EXIT = Block.__exit__.__code__
