"""The journals of released schema revisions kept as fixtures, and which of them can tell a
CSV edited by hand."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from csvjournal import _migrate

FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("journal-*.sqlite"))
OLDER = [path for path in FIXTURES if path.stem != f"journal-{_migrate.head_revision()}"]


def _notes_an_export(fixture: Path) -> bool:
    with closing(sqlite3.connect(fixture)) as conn:
        found = conn.execute("SELECT 1 FROM settings WHERE name = 'csv_digest'").fetchone()
    return found is not None


# Older journals that note the last export, so that an open tells a hand edit (the first
# revision's csvjournal noted none).
NOTING = [path for path in OLDER if _notes_an_export(path)]
