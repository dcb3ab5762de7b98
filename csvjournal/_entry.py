"""The console script: light, so that a Ctrl-C while the command line loads (SQLAlchemy
and the rest take about half a second) ends with the one line every command gives, not
a traceback."""

from __future__ import annotations

import sys

EXIT_INTERRUPTED = 130


def main() -> None:
    """Run the ``csvjournal`` command line (see :func:`csvjournal.cli.main`)."""
    try:
        from csvjournal.cli import main as run
    except KeyboardInterrupt:
        sys.stderr.write(interrupted_line(sys.argv[1:]))
        raise SystemExit(EXIT_INTERRUPTED) from None
    run()


def interrupted_line(args: list[str]) -> str:
    """The line a command interrupted gives, as a JSON log line if ``--log-json`` is asked."""
    if "--log-json" not in (args[: args.index("--")] if "--" in args else args):
        return "csvjournal: interrupted\n"
    import json  # (here: the fewer imports before main's try, the shorter the gap)
    from datetime import UTC, datetime

    line = {
        "error": "interrupted",
        "exit_code": EXIT_INTERRUPTED,
        "event": "command_interrupted",
        "level": "error",
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    return json.dumps(line) + "\n"
