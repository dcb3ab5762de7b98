"""What the exporter test modules share: reading the exported CSV back, a CSV this user may
not write."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest


def exported_rows(path: Path) -> dict[str, dict[str, str]]:
    """The CSV at ``path`` (UTF-8, key column ``ID``) as rows by key."""
    csv.field_size_limit(2**31 - 1)
    text = path.read_bytes().decode("utf-8-sig")
    return {row["ID"]: row for row in csv.DictReader(io.StringIO(text, newline=""))}


def write_protect(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """Make the OS say this process may not write ``path`` (as for another user's file:
    root, who runs the tests here, may write every file)."""
    real_access = os.access

    def access(target: object, mode: int, **kwargs: bool) -> bool:
        if Path(str(target)) == path and mode == os.W_OK:
            return False
        return real_access(target, mode, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "access", access)


# The library's log lines away from stdout: one its exporter thread writes at the moment
# the script prints "exporting" could split that word from its newline.
_LOGS_TO_STDERR = """\
import sys as _sys, structlog as _structlog
_structlog.configure(logger_factory=_structlog.PrintLoggerFactory(_sys.stderr))
"""


def start_exporter(script: str, *args: object) -> subprocess.Popen[str]:
    """Start ``script`` (Python source) with ``args`` in a process of its own, once it says
    "exporting" on stdout; it ends when its stdin closes."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _LOGS_TO_STDERR + script, *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    said = []  # what it printed before, if anything
    while (line := proc.stdout.readline()) not in ("exporting\n", ""):
        said.append(line)
    if line != "exporting\n":
        proc.kill()
        raise AssertionError(f"the exporter never started: exit {proc.wait()}: {said}")
    return proc
