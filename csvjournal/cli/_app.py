"""The ``csvjournal`` command group and what every command shares: its flags, errors,
Ctrl-C, and the arguments and options several commands take (output: ``_output``;
journals: ``_journals``).

This package is the only place that configures logging and prints. Errors are one line on
stderr and exit status 2 (``--debug`` shows the traceback before it).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sqlite3
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import IO, Any

import click
import structlog
from sqlalchemy.exc import DBAPIError

import csvjournal
from csvjournal._entry import interrupted_line
from csvjournal.cli._output import STDERR, configure_logging, one_line
from csvjournal.cli._usage import PathArgument, refuse_repeated
from csvjournal.csvio import check_encoding
from csvjournal.errors import CsvJournalError, SettingsError

__all__ = [
    "EXIT_INTERRUPTED",
    "FLUSH_SECONDS",
    "CliError",
    "Interrupted",
    "Seconds",
    "cli",
    "csv_argument",
    "encoding_option",
    "json_option",
    "run_as_script",
]

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command Ctrl-C stopped
# How long a command waits for the CSV to show its records: an exporter that cannot write
# (a full disk, another process's exporter failing) must not hang a shell script for good.
FLUSH_SECONDS = 60.0
_LOG_JSON_HELP = "Write logs as JSON lines on stderr."
_DEBUG_HELP = "Show debug logs, and tracebacks on errors."


class CliError(click.ClickException):
    """A command failed on bad input: one line on stderr, exit status 2."""

    exit_code = EXIT_BAD_INPUT
    trace: str | None = None  # the traceback --debug asks for, said in a JSON error line

    def show(self, file: IO[Any] | None = None) -> None:
        if not _as_json_line(self, "command_failed"):
            click.echo(f"csvjournal: error: {one_line(self.format_message())}", err=True, file=file)


# Whether --log-json is on the command line: then the one error line is a JSON log line
# too, and stderr carries JSON lines only (also for an unknown command or option, which
# fails before logging is configured).
_json_asked = False


def _as_json_line(error: click.ClickException, event: str) -> bool:
    """Say ``error`` as a JSON log line if the command line asks for JSON logs; whether
    it did."""
    if not _json_asked:
        return False
    configure_logging(json_logs=True, debug=False)  # (not yet, when the command is unknown)
    STDERR.release(show=False)  # what a failed command held, its one line says
    trace = getattr(error, "trace", None)
    structlog.get_logger(__name__).error(
        event,
        error=error.format_message(),
        exit_code=error.exit_code,
        **({"traceback": trace} if trace else {}),
    )
    return True


class Interrupted(CliError):
    """Ctrl-C stopped a command: one line on stderr, exit status 130."""

    exit_code = EXIT_INTERRUPTED

    def show(self, file: IO[Any] | None = None) -> None:
        if not _as_json_line(self, "command_interrupted"):
            click.echo(f"csvjournal: {one_line(self.format_message())}", err=True, file=file)


# click >= 8.2 shows the help of `csvjournal` alone through this usage error
_SHOWS_HELP: tuple[type[click.UsageError], ...] = tuple(
    cls for cls in [getattr(click.exceptions, "NoArgsIsHelpError", None)] if cls is not None
)


def _one_line(exc: click.UsageError, group: click.Context | None = None) -> click.ClickException:
    """A usage error (a missing argument, an unknown option...) as one line, like the rest;
    ``csvjournal`` alone keeps showing the help."""
    if isinstance(exc, _SHOWS_HELP):
        return exc
    if exc.ctx is not None:
        where = exc.ctx.command_path
    elif group is not None:  # (an option without its value: click's parser names no context)
        where = " ".join(filter(None, [group.command_path, group.invoked_subcommand]))
    else:
        where = "csvjournal"
    return CliError(f"{exc.format_message().rstrip('.')} (see {where} --help)")


def _late_flag(name: str, what: str) -> click.Option:
    """``--log-json``/``--debug`` after the command name: the same flag as before it."""

    def remember(ctx: click.Context, _param: click.Parameter, given: bool) -> None:
        root = ctx.find_root()
        if root.obj is None:  # a command run on its own, without the group's callback
            root.obj = {"debug": False, "log_json": False}
        flags: dict[str, bool] = root.obj
        if given and not flags.get(what):
            # the group already configured logging without the flag: configure it again
            # before the command runs, exactly as if the flag had come first
            flags[what] = True
            configure_logging(json_logs=flags["log_json"], debug=flags["debug"])
            STDERR.release(show=True)  # every line, as it comes

    helps = {"log_json": _LOG_JSON_HELP, "debug": _DEBUG_HELP}
    return click.Option(
        [name], is_flag=True, expose_value=False, callback=remember, help=helps[what]
    )


class _Command(click.Command):
    """Every command: also takes the group's ``--log-json`` and ``--debug`` after its name
    (``csvjournal record x.csv 1 --log-json``), since scripts add them at the end, and
    refuses an option of one value given twice (see :mod:`csvjournal.cli._usage`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params += [_late_flag("--log-json", "log_json"), _late_flag("--debug", "debug")]

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        refuse_repeated(self, ctx, args)
        return super().parse_args(ctx, args)


# Whether this process is the console script (not a test's CliRunner): see _Group.invoke
_as_script = False


def run_as_script() -> None:
    """Run the command line as the ``csvjournal`` program: errors print one line on
    stderr and exit 2; Ctrl-C, one line and exit 130, at any moment."""
    global _as_script  # noqa: PLW0603 - one command line a process
    _as_script = True
    cli.main(prog_name="csvjournal")


def _interrupted_now(_signum: int, _frame: FrameType | None) -> None:
    os.write(2, interrupted_line(sys.argv[1:]).encode())
    os._exit(EXIT_INTERRUPTED)  # (the command's output is flushed: see _Group.invoke)


def _flush_output() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # (closed, say: nothing to lose)
            stream.flush()


class _Group(click.Group):
    command_class = _Command

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        global _json_asked  # noqa: PLW0603 - one command line a process
        if parent is None:  # (not the words of `run`'s command, after --)
            _json_asked = "--log-json" in (args[: args.index("--")] if "--" in args else args)
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise _one_line(exc) from exc
        except KeyboardInterrupt as exc:  # reading the command line: not click's "Aborted!"
            raise Interrupted("interrupted") from exc

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return self._invoke_released(ctx)
        except KeyboardInterrupt as exc:  # in the instant after the command ended
            raise Interrupted("interrupted") from exc

    def _invoke_released(self, ctx: click.Context) -> Any:
        succeeded = False
        try:
            result = self._invoke(ctx)
            succeeded = True
            return result
        finally:
            try:
                if _as_script:
                    # The command is done; what is left is click's and Python's teardown,
                    # in which a Ctrl-C gave click's "Aborted!" (exit 1), a traceback from
                    # an atexit callback, or death by the signal: one line and 130 instead.
                    _flush_output()
                    signal.signal(signal.SIGINT, _interrupted_now)
            finally:
                STDERR.release(show=succeeded)  # the log lines a short command held

    def _invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise _one_line(exc, ctx) from exc
        except KeyboardInterrupt as exc:  # Ctrl-C: one line and 130, not click's "Aborted!"
            raise Interrupted("interrupted") from exc
        except BrokenPipeError:  # `csvjournal pending x.csv | head`: the reader has enough
            reader_gone()
            return None
        except (CsvJournalError, OSError, sqlite3.Error, DBAPIError) as exc:
            trace = None
            if ctx.obj and ctx.obj.get("debug"):  # the traceback first, then the same line
                if _json_asked:  # stderr holds JSON lines only: in the error's line
                    trace = "".join(traceback.format_exception(exc))
                else:
                    traceback.print_exception(exc, file=sys.stderr)
            if isinstance(exc, DBAPIError):  # SQLAlchemy's wrapping: SQLite's own words
                exc = exc.orig if isinstance(exc.orig, sqlite3.Error) else exc
            # as it is (a path may hold two spaces); CliError.show escapes line breaks
            message = str(exc).strip() or type(exc).__name__
            if isinstance(exc, sqlite3.Error) and not isinstance(exc, CsvJournalError):
                message = f"SQLite: {message}"  # e.g. a damaged journal met outside open()
            error = CliError(message)
            error.trace = trace
            raise error from exc


def reader_gone() -> None:
    """After a ``BrokenPipeError`` on stdout: what is left to print goes nowhere (Python's
    flush of stdout at exit would fail again, with a traceback)."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


class Seconds(click.FloatRange):
    """A number of seconds in a range; NaN, which every comparison lets through, too."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if math.isnan(number):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        return super().convert(value, param, ctx)


_STREAMING = frozenset({"run", "demo", "status"})  # their log lines are not held


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(csvjournal.__version__, prog_name="csvjournal")
@click.option("--log-json", is_flag=True, help=_LOG_JSON_HELP)
@click.option("--debug", is_flag=True, help=_DEBUG_HELP)
@click.pass_context
def cli(ctx: click.Context, log_json: bool, debug: bool) -> None:
    """Keep a batch job's CSV status sheet correct, current and crash-safe.

    Start with `csvjournal demo`. Every command but init, run (given --key) and demo
    works on a CSV that has a journal beside it (CSV.journal).
    """
    configure_logging(json_logs=log_json, debug=debug)
    ctx.obj = {"debug": debug, "log_json": log_json}
    if ctx.invoked_subcommand not in _STREAMING and not (debug or log_json):
        STDERR.hold()


def csv_argument(func: Any) -> Any:
    """The CSV argument every command takes first."""
    return click.argument("csv", type=PathArgument(dir_okay=False), callback=_a_csv_file)(func)


_SQLITE_HEADER = b"SQLite format 3\x00"


def _a_csv_file(_ctx: click.Context, _param: click.Parameter, csv: Path) -> Path:
    """Refuse a CSV argument that names a folder or a journal."""
    if csv.name in ("", ".", ".."):
        raise click.BadParameter(f"{str(csv)!r} names a folder, not a CSV file")
    if csv.suffix == ".journal":
        with contextlib.suppress(OSError), csv.open("rb") as file:
            if file.read(len(_SQLITE_HEADER)) == _SQLITE_HEADER:
                raise click.BadParameter(
                    f"{csv} is a journal; name the CSV it keeps: {csv.with_suffix('')}"
                )
    return csv


def json_option(func: Any) -> Any:
    """``--json``: print one JSON document instead of text."""
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")(func)


def _known_encoding(_ctx: click.Context, _param: click.Parameter, name: str | None) -> str | None:
    if name is None:
        return None
    try:
        return check_encoding(name)
    except SettingsError as exc:
        raise click.BadParameter(str(exc)) from None


def encoding_option(help_text: str) -> Callable[[Any], Any]:
    """``--encoding NAME``: the CSV's encoding when it is not UTF-8 (or has a BOM); an
    unknown name is refused before anything is read or written."""
    return click.option("--encoding", metavar="NAME", callback=_known_encoding, help=help_text)
