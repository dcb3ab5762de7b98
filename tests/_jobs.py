"""What the claim and work() tests share: their CSV and how they open it."""

from __future__ import annotations

from pathlib import Path

import csvjournal
from csvjournal import Journal

KEY = "ID"
TERMINAL = {"COMPLETED", "NO_ATTACHMENTS"}


def write_csv(path: Path, keys: list[str]) -> None:
    """A CSV of ``keys`` (in this order) with one more column."""
    path.write_text(f"{KEY},NAME\n" + "".join(f"{key},name of {key}\n" for key in keys))


def open_journal(csv_path: Path, **options: object) -> Journal:
    """The journal of ``csv_path`` as these tests use it: fast durability, no backups."""
    return csvjournal.open(
        csv_path,
        key=KEY,
        terminal=TERMINAL,
        durability="normal",
        keep_backups=0,
        **options,  # type: ignore[arg-type]
    )
