"""The ``csvjournal`` command group and what every command shares: logging, errors, opening
a journal, printing data.

This package is the only place that configures logging and prints. Errors are one line on
stderr and exit status 2 (``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import click
import structlog
from rich.console import Console

import csvjournal
from csvjournal.errors import CsvJournalError

__all__ = [
    "CliError",
    "cli",
    "configure_logging",
    "csv_argument",
    "existing_journal",
    "json_option",
    "log_json_wanted",
    "print_json",
    "stderr_console",
    "stdout_console",
]

EXIT_BAD_INPUT = 2


class CliError(click.ClickException):
    """A command failed on bad input: one line on stderr, exit status 2."""

    exit_code = EXIT_BAD_INPUT

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"csvjournal: error: {self.format_message()}", err=True, file=file)


# click >= 8.2 shows the help of `csvjournal` alone through this usage error
_SHOWS_HELP: tuple[type[click.UsageError], ...] = tuple(
    cls for cls in [getattr(click.exceptions, "NoArgsIsHelpError", None)] if cls is not None
)


def _one_line(exc: click.UsageError) -> click.ClickException:
    """A usage error (a missing argument, an unknown option...) as one line, like the rest;
    ``csvjournal`` alone keeps showing the help."""
    if isinstance(exc, _SHOWS_HELP):
        return exc
    where = exc.ctx.command_path if exc.ctx is not None else "csvjournal"
    return CliError(f"{exc.format_message().rstrip('.')} (see {where} --help)")


class _Group(click.Group):
    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise _one_line(exc) from exc

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise _one_line(exc) from exc
        except BrokenPipeError:  # `csvjournal pending x.csv | head`: the reader has enough
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return None
        except (CsvJournalError, OSError, sqlite3.Error) as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            message = " ".join(str(exc).split()) or type(exc).__name__
            if isinstance(exc, sqlite3.Error) and not isinstance(exc, CsvJournalError):
                message = f"SQLite: {message}"  # e.g. a damaged journal met outside open()
            raise CliError(message) from exc


def configure_logging(*, json_logs: bool, debug: bool, quiet: bool = False) -> None:
    """Send structlog's output to stderr: JSON lines or plain text, warnings and up
    (everything with ``debug``; errors only when ``quiet``)."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json_logs
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if json_logs else lambda _l, _m, e: e,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG
            if debug
            else logging.ERROR
            if quiet
            else logging.INFO
            if json_logs
            else logging.WARNING
        ),
        # one write per line: worker processes sharing stderr never splice their lines
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(csvjournal.__version__, prog_name="csvjournal")
@click.option("--log-json", is_flag=True, help="Write logs as JSON lines on stderr.")
@click.option("--debug", is_flag=True, help="Show debug logs, and tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, log_json: bool, debug: bool) -> None:
    """Keep a batch job's CSV status sheet correct, current and crash-safe.

    Start with `csvjournal demo`. Every command but init, run (given --key) and demo
    works on a CSV that has a journal beside it (CSV.journal).
    """
    configure_logging(json_logs=log_json, debug=debug)
    ctx.obj = {"debug": debug, "log_json": log_json}


def csv_argument(func: Any) -> Any:
    """The CSV argument every command takes first."""
    return click.argument("csv", type=click.Path(dir_okay=False, path_type=Path))(func)


def json_option(func: Any) -> Any:
    """``--json``: print one JSON document instead of text."""
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")(func)


def journal_path_of(csv: Path) -> Path:
    """Where the journal of ``csv`` lives."""
    return Path(f"{csv}.journal")


@contextmanager
def existing_journal(
    csv: Path, *, export: bool = False, keep_backups: int | None = None
) -> Iterator[csvjournal.Journal]:
    """Open the existing journal of ``csv`` (non-exporting unless asked; an exporting open
    takes the automatic backup unless ``keep_backups`` is 0).

    Raises:
        CliError: there is no journal beside ``csv``.
    """
    if not journal_path_of(csv).exists():
        raise CliError(f"no journal for {csv}: run csvjournal init {csv} --key COLUMN")
    keep = keep_backups if keep_backups is not None else 5 if export else 0
    with csvjournal.open(csv, export=export, keep_backups=keep) as journal:
        yield journal


def log_json_wanted() -> bool:
    """Whether ``--log-json`` was given (then stderr carries JSON lines only)."""
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx is not None else None
    return bool(root is not None and root.obj and root.obj.get("log_json"))


def stdout_console() -> Console:
    """Where human output goes."""
    return Console(highlight=False, soft_wrap=True)


def stderr_console() -> Console:
    """Where progress bars go (stdout stays clean for data)."""
    return Console(stderr=True, highlight=False)


def print_json(data: object) -> None:
    """Print one JSON document on stdout."""
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))
