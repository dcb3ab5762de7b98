"""``csvjournal run``: a command per pending row, in parallel, resumable."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import FrameType

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

import csvjournal
from csvjournal._claimargs import MAX_LEASE_SECONDS
from csvjournal._flush import RETRY_NOTE
from csvjournal._importer import unfinished
from csvjournal._settings import DEFAULT_STATUS, DEFAULT_TERMINAL, DEFAULT_TIMESTAMP
from csvjournal._writer import IN_PROGRESS, PENDING
from csvjournal.cli._app import (
    EXIT_INTERRUPTED,
    FLUSH_SECONDS,
    CliError,
    Interrupted,
    Seconds,
    cli,
    csv_argument,
    encoding_option,
    reader_gone,
)
from csvjournal.cli._commands import _names
from csvjournal.cli._journals import journal_path_of, no_journal, refuse_hand_edits_first
from csvjournal.cli._output import log_json_wanted, stderr_console, working_on
from csvjournal.csvio import read_csv
from csvjournal.runner import RunConfig, Runner, RunStats, Template

__all__: list[str] = []

EXIT_SOME_FAILED = 1


@contextmanager
def _stop_on_signals(runner: Runner) -> Iterator[None]:
    """SIGINT/SIGTERM/SIGHUP stop claiming (a second one kills the running commands):
    a closed terminal or ssh session stops the run as Ctrl-C does, its rows given back.
    SIGTSTP (Ctrl-Z) stops the running commands with the run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    seen = []

    def handle(signum: int, _frame: FrameType | None) -> None:
        seen.append(signum)
        (runner.stop if len(seen) == 1 else runner.kill)()

    def pause(_signum: int, _frame: FrameType | None) -> None:
        # Ctrl-Z: the commands stop with the run (the terminal's SIGTSTP never reaches
        # their sessions), and go on with it; while stopped, no lease is renewed
        runner.signal_commands(signal.SIGSTOP)
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)  # stopped here, until SIGCONT (fg, bg)
        signal.signal(signal.SIGTSTP, pause)
        runner.signal_commands(signal.SIGCONT)

    old = {
        sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    old[signal.SIGTSTP] = signal.signal(signal.SIGTSTP, pause)
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


def _describe(stats: RunStats) -> str:
    # short: the whole bar fits an 80-column terminal (the summary line gives the rest)
    text = f"{stats.exhausted} failed, {stats.running} running"
    return text + (", stopping" if stats.interrupted else "")


def _with_progress(runner: Runner, threads: list[threading.Thread]) -> None:
    columns = (
        BarColumn(bar_width=20),
        MofNCompleteColumn(),  # rows done (succeeded or failed for good) of all
        TextColumn("{task.description}", markup=False),
        TextColumn("{task.fields[rate]}", markup=False),
        TimeRemainingColumn(),
    )
    stats = runner.stats
    with Progress(*columns, console=stderr_console(), transient=False) as bar:
        task = bar.add_task(_describe(stats), total=stats.total or None, rate="")

        def tick() -> None:
            finished = stats.succeeded + stats.exhausted
            speed = bar.tasks[0].speed
            bar.update(
                task,
                completed=finished,
                description=_describe(stats),
                rate="" if not speed else f"{speed:,.0f} rows/s",
            )

        runner.wait(threads, on_tick=tick)
        tick()


def _check_before_writing(
    csv: Path,
    key: str | None,
    terminal: list[str] | None,
    command: tuple[str, ...],
    success_status: str,
    *,
    encoding: str | None,
) -> None:
    """Refuse a bad command line before the exporting open writes anything (its backup
    would push an older one out; an import would create the journal).

    Raises:
        CommandError: a placeholder names no column.
        CliError: --success-status is not a terminal status: every row would run again;
            the program (when no placeholder names it) is not there or not executable.
    """
    journal_path = journal_path_of(csv)
    if journal_path.exists() and (key is None or not unfinished(journal_path)):
        refuse_hand_edits_first(csv)  # (this open would upgrade an older schema first)
        with csvjournal.open(csv, export=False, keep_backups=0) as journal:
            columns = journal.columns
            stored = journal.settings.terminal
    else:
        if not csv.exists():  # a path mistyped would make an empty job and "succeed"
            raise CliError(f"{csv}: no such file (run --key imports an existing CSV)")
        header = read_csv(csv, encoding=encoding, key=key).header
        extra = [name for name in (DEFAULT_STATUS, DEFAULT_TIMESTAMP) if name not in header]
        columns, stored = [*header, *extra], DEFAULT_TERMINAL
    Template(command, columns)
    if not success_status.strip():
        raise CliError("--success-status is empty: give the status a command that exits 0 records")
    working = {PENDING, IN_PROGRESS}  # (the open would refuse them, after this hint)
    if success_status in working or (terminal is not None and working & set(terminal)):
        raise CliError(
            f"{PENDING} and {IN_PROGRESS} mean a row is not done: they can be neither"
            " --success-status nor one of --terminal"
        )
    program = command[0]
    if "{" not in program and shutil.which(program) is None:  # else every row would fail
        raise CliError(f"cannot run {program!r}: no such program, or not executable")
    done = set(terminal) if terminal is not None else set(stored)
    if success_status not in done:
        raise CliError(
            f"--success-status {success_status} is not a terminal status of {csv}"
            f" ({', '.join(sorted(done))}): every row would run again; pass"
            f" --terminal {','.join(sorted({*done, success_status}))}"
        )


def _exit_code(journal: csvjournal.Journal, stats: RunStats) -> int:
    if stats.interrupted:
        return EXIT_INTERRUPTED
    terminal = journal.settings.terminal
    undone = sum(n for status, n in journal.counts().items() if status not in terminal)
    return EXIT_SOME_FAILED if undone else 0


def _run_job(
    csv: Path,
    config: RunConfig,
    *,
    key: str | None,
    terminal: list[str] | None,
    encoding: str | None,
) -> tuple[RunStats, int, str | None]:
    """Open the journal (importing the CSV when there is none), run the pending rows with
    a progress bar, close; return the run's counts, the exit status and why the CSV does
    not show the run's records (None: it does)."""
    # a journal that exists keeps the encoding stored when it was created
    creating = not journal_path_of(csv).exists() or unfinished(journal_path_of(csv))
    with working_on(csv, "importing") if creating else nullcontext():
        journal = csvjournal.open(csv, key=key, terminal=terminal, encoding=encoding)
    with journal:
        runner = Runner(journal, config)
        with _stop_on_signals(runner):
            threads = runner.start()
            # a progress bar only for a person: JSON lines, a file or a pipe get none
            if log_json_wanted() or not stderr_console().is_terminal:
                runner.wait(threads)
            else:
                _with_progress(runner, threads)
        if runner.error is not None:  # the journal failed the run (a full disk, say)
            raise runner.error
        code = _exit_code(journal, runner.stats)
        behind = None if runner.stats.interrupted else _csv_behind(journal)
    return runner.stats, code, behind


def _csv_behind(journal: csvjournal.Journal) -> str | None:
    """Why the CSV does not show the run's records, or None when it does."""
    try:
        journal.flush(timeout=FLUSH_SECONDS)
    except csvjournal.CsvJournalError as exc:  # write-protected, edited by hand, ...
        return str(exc).removesuffix(RETRY_NOTE)  # (no retry: the handle closes now)
    return None


def _summary(csv: Path, stats: RunStats, max_attempts: int) -> None:
    click.echo(
        f"{stats.succeeded} succeeded, {stats.exhausted} failed after their last attempt"
        f" ({stats.failed} failed attempts), {stats.given_back} given back; CSV: {csv}"
    )
    if stats.spent:
        click.echo(
            f"{stats.spent} pending rows not run: their attempts are used up"
            f" (--max-attempts {max_attempts}); --retry-failed runs them again"
        )


# Python's waits for a child process take at most 2**31 milliseconds (24.8 days).
MAX_WAIT_SECONDS = 2_000_000


@cli.command()
@csv_argument
@click.option(
    "--workers",
    "-j",
    type=click.IntRange(1, 512),
    default=os.cpu_count() or 4,
    show_default="CPUs",
    help="Commands run at once.",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Tries per row, retries backing off.",
)
@click.option(
    "--timeout",
    type=Seconds(min=0, min_open=True, max=MAX_WAIT_SECONDS),
    help="Seconds before a command is killed and its row FAILED.",
)
@click.option(
    "--lease",
    type=Seconds(min=1, max=MAX_LEASE_SECONDS),
    default=300.0,
    show_default=True,
    help="Seconds a row stays claimed (renewed while its command runs).",
)
@click.option(
    "--retry-failed", is_flag=True, help="Give FAILED rows that used up their attempts new ones."
)
@click.option(
    "--success-status",
    default="COMPLETED",
    show_default=True,
    help="Status recorded when a command exits 0.",
)
@click.option("--key", help="Create the journal with this key column if there is none.")
@encoding_option("The CSV's encoding if not UTF-8 (only when --key creates the journal).")
@click.option(
    "--terminal",
    help="Statuses that mean done, comma-separated (for a new journal, or to replace the set).",
)
@click.option(
    "--grace",
    type=Seconds(min=0, max=MAX_WAIT_SECONDS),
    default=10.0,
    show_default=True,
    help="Seconds running commands get after Ctrl-C.",
)
@click.option(
    "--show-output", is_flag=True, help="Let the commands' stdout through (default: discarded)."
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(  # noqa: PLR0917 - click passes every option by position
    csv: Path,
    workers: int,
    max_attempts: int,
    timeout: float | None,
    lease: float,
    retry_failed: bool,
    success_status: str,
    key: str | None,
    terminal: str | None,
    grace: float,
    show_output: bool,
    encoding: str | None,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND once per pending row, in parallel: `run orders.csv -- fetch {PO_NUMBER}`.

    {COLUMN} in an argument is replaced by the row's value (arguments go to the program
    directly, never through a shell); every column is also in the environment as
    CSVJ_<COLUMN>. Exit 0 records --success-status; otherwise FAILED with ERROR_MESSAGE
    (last stderr line) and EXIT_CODE, retried with back-off up to --max-attempts. Ctrl-C
    stops cleanly; run again to resume. Exits 0 when every row is done, 1 when some
    failed, 130 when interrupted, 2 on bad input.
    """
    if not journal_path_of(csv).exists() and key is None:
        raise no_journal(csv, " (or pass --key)")
    names = _names(terminal)
    _check_before_writing(csv, key, names, command, success_status, encoding=encoding)
    config = RunConfig(
        command=command,
        workers=workers,
        max_attempts=max_attempts,
        timeout=timeout,
        lease=lease,
        retry_failed=retry_failed,
        success_status=success_status,
        grace=grace,
        show_output=show_output,
    )
    stats, code, behind = _run_job(csv, config, key=key, terminal=names, encoding=encoding)
    try:
        _summary(csv, stats, config.max_attempts)
    except BrokenPipeError:  # the reader of the summary left (`| head -1`): the exit
        reader_gone()  # status still tells the job's outcome
    if behind is not None:  # the rows are done, but the sheet people read does not show it
        raise CliError(f"the run's records are in the journal, but not in the CSV: {behind}")
    if code == EXIT_INTERRUPTED:  # the line every command stopped by Ctrl-C ends with
        raise Interrupted("interrupted")
    if code:
        sys.exit(code)
