"""What the Journal API test modules share: reading the journal's event log directly."""

from __future__ import annotations

import sqlite3

from csvjournal import Journal


def stored_events(journal: Journal) -> list[tuple[int, str]]:
    """Every event in the journal file, as (seq, key), oldest first."""
    conn = sqlite3.connect(journal.journal_path)
    try:
        return list(conn.execute("SELECT seq, key FROM events ORDER BY seq"))
    finally:
        conn.close()
