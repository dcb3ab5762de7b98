"""What the backup and restore tests share: child processes, and reading a journal's copies."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import csvjournal

NAME = re.compile(r"^\d{8}T\d{6}\.\d{6}Z$")


def start(script: Path, *args: object, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, str(script), *map(str, args)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def finish(proc: subprocess.Popen[bytes], log: Path) -> None:
    try:
        code = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    assert code == 0, f"child failed ({code}):\n{log.read_text()}"


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def folder_listing(csv_path: Path) -> list[str]:
    return sorted(p.name for p in Path(f"{csv_path}.backups").iterdir())


def journal_in(backup: Path) -> Path:
    return backup / "orders.csv.journal"


def dump(journal_path: Path) -> dict[str, list[tuple[object, ...]]]:
    """The journal's content straight from SQLite, without the exporter's notes and its cache
    of rendered records (``rows.line`` and ``lines_format``, which an exporter may save at any
    idle moment). Read-write, not ``mode=ro``: a read-only connection leaves a WAL journal's
    -wal/-shm."""
    with closing(sqlite3.connect(journal_path)) as c:
        return {
            "rows": c.execute(
                "SELECT pos, key, status, cells, last, lease_until, holder, attempts, done"
                " FROM rows ORDER BY pos"
            ).fetchall(),
            "events": c.execute("SELECT * FROM events ORDER BY seq").fetchall(),
            "columns": c.execute("SELECT * FROM columns ORDER BY pos").fetchall(),
            "settings": c.execute(
                "SELECT * FROM settings WHERE name NOT LIKE 'csv%' AND name != 'lines_format'"
                " ORDER BY name"
            ).fetchall(),
        }


def record_some(journal: csvjournal.Journal, start: int, count: int) -> None:
    with journal.batch():
        for n in range(start, start + count):
            journal.record(f"k{n:05d}", "COMPLETED" if n % 4 else "FAILED", N=n, NOTE="x" * 40)
