"""What the command line writes: the library's log lines (configured here, and held while a
short command runs), consoles for people, JSON for programs, a spinner for long work."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import structlog
from rich import filesize
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

__all__ = [
    "STDERR",
    "Stderr",
    "configure_logging",
    "key_line",
    "log_json_wanted",
    "one_line",
    "print_json",
    "stderr_console",
    "stdout_console",
    "working_on",
]


# What would end a line for a shell's `read` or Python's splitlines(), what a terminal would
# act on (ESC starts its escape sequences; click drops them from a pipe), and the escape itself
_CONTROLS = [chr(code) for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))]
_LINE_ENDS = str.maketrans(
    {
        **{char: f"\\x{ord(char):02x}" for char in _CONTROLS},
        "\t": "\\t",
        "\n": "\\n",
        "\r": "\\r",
        "\\": "\\\\",
        "\u2028": "\\u2028",
        "\u2029": "\\u2029",
    }
)


def key_line(key: str) -> str:
    """``key`` on one line, unambiguously and harmless to a terminal: a backslash, whatever
    ends a line and every control character escaped as Python writes them (``a\\nb`` is a
    line break, ``a\\\\nb`` a backslash and n, ``\\x1b`` ESC)."""
    return key.translate(_LINE_ENDS)


def one_line(text: str) -> str:
    """``text`` on one line: a line break in it (a file name may hold one) as ``\\n``."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


class Stderr:
    """Where the library's log lines go: stderr (looked up at each write: click's test
    runner swaps it), or held while a short command runs. A command that fails then
    prints only its one error line, which says what the held lines would have said; one
    that succeeds prints them after its work. ``run``, ``demo`` and ``status`` stream
    them: a long job's warnings matter while it runs."""

    def __init__(self) -> None:
        self.held: list[str] | None = None

    def write(self, text: str) -> int:
        if self.held is not None:
            self.held.append(text)
        elif sys.stderr is not None:  # None: started with stderr closed (`2>&-`)
            sys.stderr.write(text)
        return len(text)

    def flush(self) -> None:
        if self.held is None and sys.stderr is not None:
            sys.stderr.flush()

    def hold(self) -> None:
        self.held = []

    def release(self, *, show: bool) -> None:
        held, self.held = self.held, None
        if show and held:
            for text in held:
                self.write(text)
            self.flush()


STDERR = Stderr()


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
        logger_factory=structlog.WriteLoggerFactory(file=STDERR),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


def log_json_wanted() -> bool:
    """Whether ``--log-json`` was given (then stderr carries JSON lines only)."""
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx is not None else None
    return bool(root is not None and root.obj and root.obj.get("log_json"))


class _PipedConsole(Console):
    """A console whose reader may have enough (``| head``): the command ends as any
    command whose output pipe closed does, with exit 0 (rich's default exits 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


def stdout_console() -> Console:
    """Where human output goes: text as it is (a path or a status holding ``[x]`` is
    data, not rich markup)."""
    return _PipedConsole(highlight=False, soft_wrap=True, markup=False)


def stderr_console() -> Console:
    """Where progress bars go (stdout stays clean for data); text as it is."""
    return Console(stderr=True, highlight=False, markup=False)


def print_json(data: object) -> None:
    """Print one JSON document on stdout."""
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))


@contextmanager
def working_on(csv: Path, doing: str) -> Iterator[None]:
    """Show what a long command is ``doing`` to ``csv`` (importing, merging, recovering...)
    with a spinner and the time so far while the block runs, when stderr is a terminal
    and carries no JSON logs.

    The work (an import reads, checks and inserts the whole file) is one call that reports
    nothing on the way: an elapsed time, not a bar, is what can be shown.
    """
    console = stderr_console()
    if log_json_wanted() or not console.is_terminal:
        yield
        return
    size = csv.stat().st_size if csv.exists() else 0
    columns = (SpinnerColumn(), TextColumn("{task.description}", markup=False), TimeElapsedColumn())
    with Progress(
        *columns, console=console, transient=True, redirect_stdout=False, redirect_stderr=False
    ) as bar:
        bar.add_task(f"{doing} {csv} ({filesize.decimal(size)})", total=None)
        yield
