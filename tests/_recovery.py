"""What the recovery tests share: reading the CSV that a journal exports."""

from __future__ import annotations

import csv
import io
from pathlib import Path


def csv_rows(path: Path, key: str = "ID") -> list[dict[str, str]]:
    text = path.read_bytes().decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert all(None not in row and None not in row.values() for row in rows), "ragged CSV"
    assert len({row[key] for row in rows}) == len(rows)
    return rows


def csv_status(path: Path) -> dict[str, str]:
    return {row["ID"]: row["STATUS"] for row in csv_rows(path)}
