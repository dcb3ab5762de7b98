"""What the command-line tests share: running the CLI in-process and as the installed
console script, reading what it wrote, and a journal of three purchase orders.

Most tests call the click group in-process (``CliRunner``); a representative subset, every
``--help``, the interrupt tests and the demo run the real console script installed beside
``sys.executable``.
"""

from __future__ import annotations

import csv as csvmod
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from csvjournal.cli import cli

CONSOLE_SCRIPT = Path(sys.executable).parent / "csvjournal"
TERMINAL = "COMPLETED,NO_ATTACHMENTS"
SUBPROCESS_TIMEOUT = 120.0


def invoke(*args: object, env: dict[str, str] | None = None) -> Result:
    """Run the command line in-process."""
    return CliRunner().invoke(cli, [str(arg) for arg in args], env=env, prog_name="csvjournal")


def ok(result: Result) -> str:
    """Assert exit 0 and return stdout."""
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result.stdout


def assert_one_error_line(stderr: str, code: int, *fragments: str, stdout: str = "") -> str:
    """Exit 2, nothing on stdout, exactly one line on stderr: ``csvjournal: error: ...``."""
    assert code == 2, stderr
    assert stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("csvjournal: error: "), stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def assert_error(result: Result, *fragments: str) -> str:
    return assert_one_error_line(result.stderr, result.exit_code, *fragments, stdout=result.stdout)


def state_of(folder: Path) -> dict[str, bytes | None]:
    """Every file in ``folder`` and below (bytes; folders as None), except the exporter's
    lock file: what 'nothing changed' compares."""
    state: dict[str, bytes | None] = {}
    for path in sorted(folder.rglob("*")):
        if path.name in {"exporter.lock", "writer.lock"} or path.name.endswith(("-wal", "-shm")):
            continue
        state[str(path.relative_to(folder))] = path.read_bytes() if path.is_file() else None
    return state


def read_rows(path: Path, delimiter: str = ",") -> list[dict[str, str]]:
    """The CSV on disk, as written (no journal involved)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return list(csvmod.DictReader(handle, delimiter=delimiter))


def statuses(path: Path, key: str = "ID") -> dict[str, str]:
    return {row[key]: row["STATUS"] for row in read_rows(path)}


def events(csv: Path, key: str) -> list[dict[str, object]]:
    data = json.loads(ok(invoke("history", csv, key, "--json")))
    assert data["key"] == key
    return list(data["events"])


def wait_for(condition: Callable[[], bool], timeout: float = SUBPROCESS_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def start(*args: object) -> subprocess.Popen[str]:
    """Start the installed console script (several at once: each start is slow)."""
    return subprocess.Popen(
        [str(CONSOLE_SCRIPT), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=SUBPROCESS_TIMEOUT)
    finally:
        proc.kill()
    return proc.returncode, out, err


def _json_lines(stderr: str) -> list[dict[str, object]]:
    found = [json.loads(line) for line in stderr.splitlines()]
    for entry in found:
        assert {"event", "level", "timestamp"} <= set(entry), entry
    return found


@pytest.fixture(name="orders")
def orders_fixture(tmp_path: Path) -> Path:
    """orders.csv with a journal: three purchase orders, key PO_NUMBER."""
    path = tmp_path / "orders.csv"
    lines = ["PO_NUMBER,SUPPLIER,AMOUNT", "PO-1,ACME,10.00", 'PO-2,"Müller; ""GmbH""",00200']
    path.write_text("\n".join([*lines, "PO-3,Tanaka,3", ""]), encoding="utf-8")
    out = ok(invoke("init", path, "--key", "PO_NUMBER", "--terminal", TERMINAL))
    assert out == f"created {path}.journal: 3 rows, key column PO_NUMBER\n"
    return path
