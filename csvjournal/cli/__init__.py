"""The ``csvjournal`` command line (click + rich): the only place that configures logging
and prints. ``main`` is the console script."""

from __future__ import annotations

from csvjournal.cli import _commands, _demo, _run, _status  # noqa: F401 - they register commands
from csvjournal.cli._app import cli

__all__ = ["cli", "main"]


def main() -> None:
    """Run the command line: errors print one line on stderr and exit 2."""
    cli.main(prog_name="csvjournal")
