"""Child processes of the crash, recovery and backup tests: real Python processes running
scripts written into ``tmp_path``, which log to stderr (structlog prints to stdout by
default) and report on files of their own, one line at a time."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

READY_TIMEOUT = 60.0  # seconds a child may take to start, import and open the journal

PRELUDE = """\
import json
import os
import sys
import time
from pathlib import Path

import structlog

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

import csvjournal
"""


def script(tmp_path: Path, name: str, body: str) -> Path:
    """Write the child script ``name`` (the prelude, then ``body``) into ``tmp_path``."""
    path = tmp_path / f"{name}.py"
    path.write_text(PRELUDE + body)
    return path


def lines(report: Path) -> list[str]:
    """The complete lines of a report; a last line without its newline is ignored."""
    if not report.exists():
        return []
    return [line.decode() for line in report.read_bytes().split(b"\n")[:-1]]


def wait_for_line(proc: subprocess.Popen[bytes], report: Path, line: str, log: Path) -> None:
    """Wait until the child reports ``line``; fail if it ends first or takes too long."""
    deadline = time.monotonic() + READY_TIMEOUT
    while line not in lines(report):
        assert proc.poll() is None, f"child ended early ({proc.returncode}):\n{log.read_text()}"
        assert time.monotonic() < deadline, f"child never reported {line!r}"
        time.sleep(0.01)
