"""The engine of ``csvjournal run``: one command per pending row, from a pool of threads.

Each worker thread takes rows with :meth:`Journal.work` (one claim at a time, the lease
renewed while the command runs) and runs the command with the row's values: ``{COLUMN}``
placeholders are replaced in the arguments, which go to the program directly (never through
a shell), and every column is also in the environment as ``CSVJ_<COLUMN>``. Exit status 0
records the success status; anything else, or a timeout, records ``FAILED`` with
``ERROR_MESSAGE`` (the last non-empty line the command wrote on stderr) and ``EXIT_CODE``, and
the row is retried after an exponential back-off with jitter until it has had
``max_attempts`` attempts. Stopping (Ctrl-C) claims nothing more, lets running commands
finish for a grace period, kills what is left and gives those rows back to ``PENDING``.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import structlog

from csvjournal._leases import Action
from csvjournal._process import (
    RUN_VARIABLE,
    Outcome,
    kill_group,
    run_mark,
    start,
    stop_leftovers,
    wait,
)
from csvjournal._runs import forget_run, note_run_and_free_gone
from csvjournal._values import timestamp_now
from csvjournal._work import Task
from csvjournal.errors import CommandError, CsvJournalError, SettingsError
from csvjournal.journal import Journal

__all__ = ["RunConfig", "RunStats", "Runner", "Template", "env_name"]

log = structlog.get_logger(__name__)

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_SPACE = re.compile(r"\s")
_BACKOFF_CAP_SECONDS = 60.0


def env_name(column: str) -> str:
    """The environment variable holding ``column``: ``CSVJ_`` and the name upper-cased with
    every character other than A-Z and 0-9 turned into ``_``."""
    return "CSVJ_" + re.sub(r"[^A-Z0-9]", "_", column.upper())


def _loose(name: str) -> str:
    """A column name as a typo might give it: case and runs of spaces aside."""
    return " ".join(name.split()).casefold()


class Template:
    """A command line whose arguments may hold ``{COLUMN}`` placeholders (``{{`` and
    ``}}`` stand for literal braces; braces around text with spaces that is no column, as
    in ``sh -c '{ cmd; }'``, stay as they are).

    Raises (from the constructor):
        CommandError: an empty command, or a placeholder naming no column of the CSV.
    """

    def __init__(self, argv: Sequence[str], columns: Sequence[str]) -> None:
        if not argv:
            raise CommandError("no command given: put it after --, e.g. -- echo {ID}")
        known = set(columns)
        loosely = {_loose(column): column for column in columns}
        for arg in argv:
            for match in _PLACEHOLDER.finditer(arg):
                name = match.group(1)
                if name is None or name in known:
                    continue
                if _loose(name) in loosely:  # "{L1 UU supplier name }": a typo, spaces or not
                    raise CommandError(
                        f"placeholder {{{name}}} in {arg!r} names no column of the CSV;"
                        f" did you mean {{{loosely[_loose(name)]}}}?"
                        f" (columns: {', '.join(columns)})"
                    )
                # "{ echo x; }" (shell braces) is text; "{CITTY}" is a typo worth an error
                if not _SPACE.search(name):
                    raise CommandError(
                        f"placeholder {{{name}}} in {arg!r} names no column of the CSV"
                        f" (columns: {', '.join(columns)}; write {{{{ and }}}} for a brace)"
                    )
        self.argv = tuple(argv)
        self._known = known

    def render(self, row: dict[str, str]) -> list[str]:
        """The arguments for one row: every placeholder replaced by that row's value."""

        known = self._known

        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            if name is None:
                return match.group(0)[0]
            return row[name] if name in known else match.group(0)

        return [_PLACEHOLDER.sub(fill, arg) for arg in self.argv]


@dataclass(frozen=True, slots=True)
class RunConfig:
    """How ``run`` runs: the command and its limits."""

    command: tuple[str, ...]
    workers: int = 4
    max_attempts: int = 3
    timeout: float | None = None
    lease: float = 300.0
    retry_failed: bool = False
    success_status: str = "COMPLETED"
    grace: float = 10.0
    backoff: float = 1.0
    show_output: bool = False


@dataclass(slots=True)
class RunStats:
    """What a run did so far (updated by the worker threads): rows that succeeded, failed
    attempts, rows whose attempts are used up, rows given back unfinished, commands running."""

    total: int = 0
    succeeded: int = 0
    failed: int = 0
    exhausted: int = 0
    retried: int = 0
    given_back: int = 0
    spent: int = 0  # pending rows not run: their attempts are used up (no --retry-failed)
    running: int = 0
    interrupted: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        """Add to counters, thread-safely."""
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


class Runner:
    """Runs ``config.command`` once per pending row of ``journal``."""

    def __init__(self, journal: Journal, config: RunConfig) -> None:
        self._journal = journal
        self._config = config
        terminal = journal.settings.terminal
        if config.success_status not in terminal:
            raise CommandError(
                f"{journal.csv_path}: --success-status {config.success_status} is not a terminal"
                f" status of this journal ({', '.join(sorted(terminal))}), so every row would run"
                " again; pick a terminal one"
            )
        self._template = Template(config.command, journal.columns)
        self._stop = threading.Event()
        self._kill = threading.Event()
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._children_lock = threading.Lock()
        # in every command's environment: a run after this one was killed stops them
        self._mark = run_mark(journal.journal_path)
        self.stats = RunStats()
        # what stopped the run, if the journal failed it (a full disk): the first error
        self.error: CsvJournalError | None = None

    def stop(self) -> None:
        """Claim no more rows; running commands get the grace period (thread-safe)."""
        if not self._stop.is_set():
            self.stats.interrupted = True
            self._stop.set()
            log.info("run_stopping", grace=self._config.grace)

    def kill(self) -> None:
        """Stop now: kill the running commands (their rows go back to ``PENDING``)."""
        self.stop()
        self._kill.set()

    def start(self) -> list[threading.Thread]:
        """Start the worker threads; return them (join them, or use :meth:`wait`). First
        stop the commands that a run of this journal killed outright left running: they must
        not run on beside their rows started again."""
        stop_leftovers(self._journal.journal_path)
        self._return_rows_of_gone_runs()
        # Rows left pending with their attempts used up (reset to PENDING by hand, a worker
        # killed on its last attempt, a terminal set narrowed): skipped by the claims.
        limit = self._config.max_attempts
        claimable = set(self._journal.pending(max_attempts=limit))
        spent = [key for key in self._journal.pending() if key not in claimable]
        if self._config.retry_failed:
            retried = {*self._journal.retry(), *self._journal.retry(spent)}
            log.info("run_retrying_failed_rows", rows=len(retried))
        elif spent:
            self.stats.spent = len(spent)
            log.info("run_skipping_spent_rows", rows=len(spent), max_attempts=limit)
        self.stats.total = len(self._journal.pending(max_attempts=limit))
        threads = [
            threading.Thread(target=self._worker, args=(n,), name=f"run-{n}", daemon=True)
            for n in range(self._config.workers)
        ]
        for thread in threads:
            thread.start()
        return threads

    def _return_rows_of_gone_runs(self) -> None:
        """Return to ``PENDING`` now, their attempt counted, the rows that the workers of a
        run of this journal on this machine held when the run was killed outright (kill
        -9): its process is gone, so its leases hold nothing, and this run would otherwise
        wait until they run out (300 s by default). See :mod:`csvjournal._runs`."""
        worker = self._journal._worker_name()
        returned: list[tuple[str, str, int]] = self._journal._write(  # type: ignore[assignment]
            Action(
                lambda conn, writer: note_run_and_free_gone(
                    conn, writer, now=time.time(), at=timestamp_now(), worker=worker
                )
            )
        )
        if returned:
            workers = sorted({holder for _, holder, _ in returned})
            log.warning("rows_of_gone_run_returned", rows=len(returned), workers=workers)

    def wait(
        self,
        threads: list[threading.Thread],
        poll: float = 0.1,
        on_tick: Callable[[], object] | None = None,
    ) -> None:
        """Wait for the workers (calling ``on_tick`` every ``poll`` seconds); after a stop,
        kill the commands still running when the grace period ends."""
        deadline: float | None = None
        killed = False
        while any(thread.is_alive() for thread in threads):
            if self._stop.is_set() and deadline is None:
                deadline = time.monotonic() + self._config.grace
            late = deadline is not None and time.monotonic() >= deadline
            if not killed and (late or self._kill.is_set()):
                killed = True
                self._kill.set()
                threading.Thread(target=self._terminate_children, daemon=True).start()
            for thread in threads:
                thread.join(poll / len(threads))
            if on_tick is not None:
                on_tick()
        with contextlib.suppress(CsvJournalError):  # noted gone by the next run, if not here
            self._journal._write(Action(forget_run))

    def _worker(self, index: int) -> None:
        try:
            self._work(index)
        except CsvJournalError as exc:  # the journal cannot go on (a full disk): nor can we
            with self.stats.lock:
                first = self.error is None
                if first:
                    self.error = exc
            if first:  # the caller raises it (the CLI's error line): no louder here
                log.info("run_failed", error=str(exc))
            self._stop.set()  # claim no more; running commands finish their rows

    def _work(self, index: int) -> None:
        worker = f"{socket.gethostname()}:{os.getpid()}:run-{index}"
        config = self._config
        tasks = self._journal.work(
            lease=config.lease,
            worker=worker,
            max_attempts=config.max_attempts,
            success_status=config.success_status,
            stop=self._stop,
        )
        with contextlib.closing(tasks):  # left by an error: the row is given back at once
            self._run_tasks(index, tasks)

    def _run_tasks(self, index: int, tasks: Iterator[Task]) -> None:
        config = self._config
        for task in tasks:
            self._refuse_narrowed_terminal()  # (the row claimed is given back)
            row = self._journal.get(task.key) or {}
            self.stats.add(running=1)
            try:
                outcome = self._execute(index, self._template.render(row), row)
            finally:
                self.stats.add(running=-1)
            if outcome.code is None:
                task.release()
                self.stats.add(given_back=1)
            elif outcome.code == 0:
                fields = {"ERROR_MESSAGE": "", "EXIT_CODE": "0"}
                if task.record(config.success_status, fields=fields) is not None:
                    self.stats.add(succeeded=1)
                    log.debug("run_row_done", key=task.key)  # committed: never runs again
            else:
                self._failed(task, outcome)

    def _refuse_narrowed_terminal(self) -> None:
        """Stop the run once another open's ``terminal=`` left out the success status: the
        rows this run finished would be pending again, and their commands run again.

        Raises:
            SettingsError: the success status is no longer terminal.
        """
        terminal = self._journal.settings.terminal
        if self._config.success_status not in terminal:
            raise SettingsError(
                f"{self._journal.csv_path}: another open made the terminal statuses"
                f" {', '.join(sorted(terminal))}, without --success-status"
                f" {self._config.success_status}: stopped, or every row done would run again"
            )

    def _failed(self, task: Task, outcome: Outcome) -> None:
        key = task.key
        # The journal counts the attempts (across runs): the back-off doubles with each.
        attempts = max(1, self._journal.attempts(key) or 0)
        delay = min(_BACKOFF_CAP_SECONDS, self._config.backoff * 2 ** (attempts - 1))
        # A row whose attempts are used up gets no back-off: nothing retries it here, and
        # `pending` shows it at once (with --retry-failed a later run may start it at once).
        spent = attempts >= self._config.max_attempts
        # The command's words in what the CSV can write ("→" has no place in cp1252): '?'
        encoding = self._journal.settings.dialect.encoding
        message = outcome.message.encode(encoding, "replace").decode(encoding)
        with self._journal.batch():  # one commit: the failure and its back-off
            fields = {"ERROR_MESSAGE": message, "EXIT_CODE": str(outcome.code)}
            if task.record("FAILED", fields=fields) is None:
                return  # another worker took the row over and finished it: that stands
            if not spent:
                self._journal.defer([key], delay * random.uniform(0.5, 1.0))
        self.stats.add(failed=1, exhausted=int(spent))
        log.info("run_row_failed", key=key, code=outcome.code, error=outcome.message)

    def _execute(self, index: int, argv: list[str], row: dict[str, str]) -> Outcome:
        if self._kill.is_set():
            return Outcome(None, "")
        env = dict(os.environ)
        env.update({env_name(name): value for name, value in row.items()})
        if self._mark is not None:
            env[RUN_VARIABLE] = self._mark
        child = start(argv, env, show_output=self._config.show_output)
        if isinstance(child, Outcome):
            return child
        with self._children_lock:
            self._children[index] = child
        try:
            return wait(child, self._config.timeout, self._kill)
        finally:
            with self._children_lock:
                self._children.pop(index, None)

    def signal_commands(self, signum: int) -> None:
        """Send ``signum`` to the running commands (each to its process group): they run
        in sessions of their own, out of reach of the terminal's signals."""
        with self._children_lock:
            children = list(self._children.values())
        for child in children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signum)

    def _terminate_children(self) -> None:
        # All at once: one after another, each taking up to its SIGTERM's grace, the last
        # would get its signal seconds late (and a command finishing meanwhile given back)
        with self._children_lock:
            children = list(self._children.values())
        killers = [threading.Thread(target=kill_group, args=(c,), daemon=True) for c in children]
        for killer in killers:
            killer.start()
        for killer in killers:
            killer.join()
