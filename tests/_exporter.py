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


def start_exporter(script: str, *args: object) -> subprocess.Popen[str]:
    """Start ``script`` (Python source) with ``args`` in a process of its own, once it says
    "exporting" on stdout; it ends when its stdin closes."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    said = []  # the library's log lines come first, on stdout where nothing configured them
    while (line := proc.stdout.readline()) not in ("exporting\n", ""):
        said.append(line)
    if line != "exporting\n":
        proc.kill()
        raise AssertionError(f"the exporter never started: exit {proc.wait()}: {said}")
    return proc
