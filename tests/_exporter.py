"""What the exporter test modules share: reading the exported CSV back."""

from __future__ import annotations

import csv
import io
from pathlib import Path


def exported_rows(path: Path) -> dict[str, dict[str, str]]:
    """The CSV at ``path`` (UTF-8, key column ``ID``) as rows by key."""
    csv.field_size_limit(2**31 - 1)
    text = path.read_bytes().decode("utf-8-sig")
    return {row["ID"]: row for row in csv.DictReader(io.StringIO(text, newline=""))}
