"""The ``csvjournal`` command line (click + rich): the only place that configures logging
and prints. ``main`` is the console script."""

from __future__ import annotations

from csvjournal.cli import _commands, _demo, _run, _status  # noqa: F401 - they register commands
from csvjournal.cli._app import cli, run_as_script

__all__ = ["cli", "main"]


def main() -> None:
    """Run the command line: errors print one line on stderr and exit 2; Ctrl-C, one line
    and exit 130."""
    run_as_script()
