"""Work distribution on a journal handle: claims, leases, back-off and the work loop.

:class:`Claims` is the part of :class:`~csvjournal.journal.Journal` that hands rows out to
workers; the SQL lives in :mod:`csvjournal._leases`, the loop in :mod:`csvjournal._work`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterable, Mapping
from typing import cast

from csvjournal import _reads
from csvjournal._claimargs import (
    MAX_LEASE_SECONDS,
    attempts_limit,
    claim_args,
    key_list,
    valid_lease,
)
from csvjournal._handle import Handle
from csvjournal._heldclaims import Change, ends
from csvjournal._interrupts import HeldInterrupts
from csvjournal._leases import (
    Action,
    claim_rows,
    defer_rows,
    extend_leases,
    record_outcome,
    release_rows,
    reset_attempts,
)
from csvjournal._values import render_value, seconds_arg, storable, timestamp_now
from csvjournal._work import Task, work
from csvjournal._writer import RecordCall
from csvjournal.errors import BatchOpenError, SettingsError

__all__ = ["Claims"]


class Claims(Handle):
    """Claims, leases, attempts and :meth:`work` (mixed into :class:`Journal`)."""

    def claim(
        self,
        n: int = 1,
        *,
        lease: float = 300.0,
        worker: str | None = None,
        max_attempts: int | None = None,
    ) -> list[str]:
        """Atomically take up to ``n`` pending rows, in CSV order: each becomes
        ``IN_PROGRESS``, leased to ``worker`` (default ``host:pid:thread``; ``#2``... for
        further handles of the journal in this process) for ``lease`` seconds, its attempts
        counted up, with an event. Rows with ``max_attempts`` attempts or more are skipped.
        No two claimers get one row while its lease lives; a row whose lease ran out is
        pending again. Returns the keys taken (fewer, or none, when fewer rows are pending).

        Raises:
            SettingsError: ``n`` or ``max_attempts`` below 1, or ``lease`` not a number of
                seconds above 0 and at most :data:`MAX_LEASE_SECONDS` (30 days).
            TypeError: ``n`` or ``max_attempts`` not an int, ``worker`` not text, ``lease``
                not a number.
            JournalBusyError: other writers held the journal longer than the busy timeout.
            JournalClosedError: the handle is closed.
        """
        n, max_attempts = claim_args(n, lease, worker, max_attempts)
        self._ensure()
        return self._claim(n, lease, worker or self._worker_name(), max_attempts, None)

    def _claim(
        self,
        n: int,
        lease: float,
        name: str,
        max_attempts: int | None,
        abandon: threading.Event | None,
    ) -> list[str]:
        """:meth:`claim`, its arguments checked; once ``abandon`` is set, a claim still
        waiting for a journal that other processes keep busy gives up
        (:class:`JournalBusyError`). Raises :class:`JournalClosedError` on a closed handle
        (a work loop still running at the close)."""
        thread = threading.current_thread()  # not its ident, which a new thread may reuse

        def note(taken: object) -> None:  # before a signal held off meanwhile raises
            pairs = cast("list[tuple[str, int]]", taken)
            self._note_claims([Change(key, seq, name, True, thread) for key, seq in pairs])

        # (signals held off: one raising in the count's bookkeeping would leave close()
        # waiting for a claim that ended)
        with HeldInterrupts(), self._held.claiming():
            self._ensure()
            # The time is read inside the transaction, once the write lock is ours: a claim
            # that waited for the lock must see the leases that ran out meanwhile, and get
            # its whole lease. Once close() began, it takes nothing (close gives rows back).
            taken: list[tuple[str, int]] = self._write(  # type: ignore[assignment]
                Action(
                    lambda conn, writer: (
                        []
                        if self._closed
                        else claim_rows(
                            conn,
                            writer,
                            n=n,
                            now=time.time(),
                            lease=lease,
                            worker=name,
                            at=timestamp_now(),
                            max_attempts=max_attempts,
                        )
                    ),
                    abandon=abandon,
                ),
                committed=note,
            )
        self._ensure()  # (closed meanwhile: nothing taken)
        return [key for key, _ in taken]

    def _refuse_in_batch(self, name: str) -> None:
        # What the call waits for writes to the journal too (the exporter, a work loop's
        # lease renewer): waiting for it under the block's own write lock would wait for
        # ever (or for the busy timeout).
        if self._open_batch() is not None:
            raise BatchOpenError(
                f"{self.csv_path}: {name}() inside a batch() block would wait for the block's"
                " own write lock; call it after the block"
            )
        if self._committer.inside():  # a signal's handler, run while its thread commits
            raise self._commits.reentered(f"called {name}()")

    def _in_batch(self) -> bool:
        return self._open_batch() is not None

    def _event_committed(self, seq: int) -> bool:
        """Whether event ``seq`` is in the journal (not undone with its block)."""
        with self._reading() as conn:
            return _reads.event_exists(conn, seq)

    def _note_claims(self, changes: list[Change]) -> None:
        """Note committed changes to the handle's claims; inside a batch, once it commits."""
        batch = self._batches.get(threading.get_ident())
        if batch is not None:  # its claims at once, the rest when it commits (HeldClaims)
            self._held.note((change for change in changes if change.claimed), in_block=True)
            batch.track(changes)
        elif changes:
            self._held.note(changes)

    def extend(self, keys: Iterable[str], lease: float, *, worker: str | None = None) -> list[str]:
        """Renew the leases of rows claimed through this handle to ``lease`` seconds from
        now; return the keys renewed. A row that another worker took over after its lease
        ran out, or that was finished, is not renewed (and is left out). The claim renewed
        is ``worker``'s (the name given to :meth:`claim`); by default the one this thread
        made, else the newest, unless this thread's own claim of the row has ended.

        Raises:
            TypeError: ``keys`` is one key (a string), not a list of them; ``lease`` not a
                number.
            SettingsError: ``lease`` not a number of seconds above 0 and at most
                :data:`MAX_LEASE_SECONDS` (30 days).
            JournalBusyError: other writers held the journal longer than the busy timeout.
            JournalClosedError: the handle is closed.
        """
        if not valid_lease(lease):
            raise SettingsError(
                f"extend needs 0 < lease <= {MAX_LEASE_SECONDS:,} (30 days), not {lease}"
            )
        self._ensure()
        held = self._held.holders(key_list(keys), worker, threading.current_thread())
        renewed: list[str] = self._write(  # type: ignore[assignment]
            Action(lambda conn, _writer: extend_leases(conn, held, time.time() + lease))
        )
        return renewed

    def release(
        self, keys: Iterable[str], note: str = "released", *, worker: str | None = None
    ) -> list[str]:
        """Give rows claimed through this handle back unfinished: ``PENDING``, lease ended,
        the attempt not counted. Return the keys given back. The claim given back is
        ``worker``'s (the name given to :meth:`claim`); by default the one this thread
        made, else the newest, unless this thread's own claim of the row has ended. A row
        no longer held by that claim (its lease ran out and another worker took it over,
        or it was finished) is left alone.

        Raises:
            TypeError: ``keys`` is one key (a string), not a list of them.
            JournalBusyError: other writers held the journal longer than the busy timeout.
            JournalClosedError: the handle is closed.
        """
        self._ensure()
        held = self._held.holders(key_list(keys), worker, threading.current_thread())
        return self._release(held, note)

    def _release(self, held: list[tuple[str, str]], note: str) -> list[str]:
        """Give back each ``(key, worker)`` claim still holding its row (see :meth:`release`)."""
        at, by = timestamp_now(), self._worker_name()

        def given_back(result: object) -> None:  # (before a signal held off is handled)
            # A claim that held nothing stays known: the thread that made it must not act
            # on the newer claim of another thread (see HeldClaims.holders) by a later call.
            given = cast("list[tuple[str, str, int]]", result)
            self._note_claims([Change(key, seq, holder) for key, holder, seq in given])

        released: list[tuple[str, str, int]] = self._write(  # type: ignore[assignment]
            Action(
                lambda conn, writer: release_rows(
                    conn, writer, held, at=at, worker=by, note=f"{note} by {by}"
                )
            ),
            committed=given_back,
        )
        return [key for key, _, _ in released]

    def _record_outcome(
        self,
        key: str,
        worker: str,
        status: str | None,
        fields: Mapping[str, object] | None,
        more: Mapping[str, object],
    ) -> int | None:
        """:meth:`record` the outcome of a row claimed by ``worker``; None, and nothing
        recorded, when it comes late and would undo another worker's: the lease ran out,
        another worker took the row over and finished it or still holds it, and this
        outcome would move it to an unfinished status (``FAILED``, say). A late terminal
        outcome is recorded.

        Raises:
            the errors of :meth:`record`.
        """
        self._ensure()
        op = self._commits.prepare(RecordCall(key, status, fields, more, worker))

        def note(result: object) -> None:  # (before a signal held off meanwhile is handled)
            if result is not None:  # else the row is another claim's now; this one stays
                self._note_claims(ends([op]))  # known (see _release)

        seq: int | None = self._write(  # type: ignore[assignment]
            Action(
                lambda conn, writer: record_outcome(conn, writer, op, worker, time.time()), op=op
            ),
            committed=note,
        )
        return seq

    def defer(self, keys: Iterable[str], seconds: float) -> list[str]:
        """Keep rows out of :meth:`pending` and :meth:`claim` for ``seconds`` (a retry
        back-off after a failure); return the keys deferred (rows done or in progress are left
        alone).

        Raises:
            TypeError: ``keys`` is one key (a string), not a list of them; ``seconds`` not a
                number.
            SettingsError: ``seconds`` not a number from 0 to :data:`MAX_LEASE_SECONDS`.
            JournalBusyError: other writers held the journal longer than the busy timeout.
            JournalClosedError: the handle is closed.
        """
        if not 0 <= seconds_arg("seconds", seconds) <= MAX_LEASE_SECONDS:  # NaN is neither
            raise SettingsError(
                f"defer needs 0 <= seconds <= {MAX_LEASE_SECONDS:,} (30 days), not {seconds}"
            )
        self._ensure()
        chosen, until = [key for key in key_list(keys) if storable(key)], time.time() + seconds
        deferred: list[str] = self._write(  # type: ignore[assignment]
            Action(lambda conn, _writer: defer_rows(conn, chosen, until))
        )
        return deferred

    def retry(self, keys: Iterable[str] | None = None, *, status: str = "FAILED") -> list[str]:
        """Give rows a fresh set of attempts (for ``claim(max_attempts=...)``): ``keys``,
        or every row in ``status`` (default ``FAILED``) that was tried; return those keys.

        Raises:
            TypeError: ``keys`` is one key (a string), not a list of them.
            JournalBusyError: other writers held the journal longer than the busy timeout.
            JournalClosedError: the handle is closed.
        """
        self._ensure()
        chosen = None if keys is None else [key for key in key_list(keys) if storable(key)]
        reset: list[str] = self._write(  # type: ignore[assignment]
            Action(lambda conn, _writer: reset_attempts(conn, chosen, status))
        )
        return reset

    def work(
        self,
        *,
        lease: float = 300.0,
        worker: str | None = None,
        max_attempts: int | None = 3,
        success_status: str = "COMPLETED",
        stop: threading.Event | None = None,
    ) -> Generator[Task, None, None]:
        """Claim rows one at a time and yield each as a :class:`Task`; see
        :func:`csvjournal._work.work` for the whole contract. Typical use::

            for task in journal.work(lease=60):
                with task:  # an exception records FAILED + ERROR_MESSAGE; the loop goes on
                    task.record("COMPLETED", ATTACHMENTS_FOUND=download(task.key))

        Records made in the loop's thread while it runs carry ``worker`` as well.
        ``success_status`` must be terminal, or every row would be taken again.

        Raises:
            SettingsError: ``success_status`` is not one of the journal's terminal
                statuses, or ``lease``/``max_attempts`` as :meth:`claim` refuses them.
            TypeError: ``worker`` not text, ``max_attempts`` not an int.
            JournalClosedError: the handle is closed (also when the loop asks for its next
                row after a close).
            BatchOpenError: the loop is iterated inside a ``batch()`` block of its thread
                (its lease renewals would wait for the block's own write lock).
        """
        claim_args(1, lease, worker, max_attempts)
        terminal = self.settings.terminal
        if success_status not in terminal:
            raise SettingsError(
                f"success_status {success_status!r} is not terminal in this journal"
                f" (terminal: {', '.join(sorted(terminal))})"
            )
        name = worker or self._worker_name()

        def loop() -> Generator[Task, None, None]:
            previous = getattr(self._local, "worker", None)
            self._local.worker = name  # in the thread that iterates
            try:
                yield from work(
                    self,
                    lease=lease,
                    worker=name,
                    max_attempts=max_attempts,
                    success_status=success_status,
                    stop=stop,
                )
            finally:
                self._local.worker = previous

        return loop()

    def next_lease_end(self, max_attempts: int | None = None) -> float | None:
        """When (epoch seconds) the first live lease on a row that could still be claimed
        again (with ``max_attempts``: by :meth:`claim` with it) runs out; ``None`` when no
        such row is leased.

        Raises:
            SettingsError: ``max_attempts`` below 1.
            TypeError: ``max_attempts`` not an integer.
            JournalClosedError: the handle is closed.
        """
        max_attempts = attempts_limit("next_lease_end", max_attempts)
        with self._reading() as conn:
            return _reads.next_lease_end(conn, time.time(), max_attempts)

    def attempts(self, key: str) -> int | None:
        """How many times the row ``key`` was claimed, not counting claims given back
        unfinished (``None`` for an unknown key).

        Raises:
            JournalClosedError: the handle is closed.
        """
        text = render_value(self._settings.key_column, key)
        with self._reading() as conn:
            return _reads.attempts(conn, text) if storable(text) else None
