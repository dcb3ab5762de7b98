"""The CSV of the readers tests: 50,000 rows of values that need quoting, and its checks."""

from __future__ import annotations

import csv
import random
import sqlite3
from contextlib import closing
from pathlib import Path

import csvjournal

ROWS = 50_000
KEY = "ID"
HEADER = [KEY, "STATUS", "LAST_PROCESSED", "SUPPLIER", "NOTE", "AMOUNT"]
ENCODING = "utf-8-sig"  # the CSV starts with a byte-order mark, which is kept
WORKER_STATUSES = ("COMPLETED", "FAILED", "NO_ATTACHMENTS")
STATUSES = ("PENDING", *WORKER_STATUSES)  # every status the CSV may show
# Values that need quoting (delimiter, quote, line breaks) or must stay text as written.
NOTES = (
    "plain",
    "with, a comma",
    'with "quotes", and a comma',
    "two\nlines",
    "windows\r\nline break",
    '"quoted only"',
    "ünïcödé ✓ — ok",
    "",
    "=1+2",
    " leading and trailing space ",
)
SUPPLIERS = ("ACME", "ACME, Inc.", 'The "Best" Co', "Müller GmbH", "multi\nline\nname", "")
AMOUNTS = ("00123", "NA", "1e5", "-12.50", "", "null", "3,14")

SEED = 20261201


def _key(i: int) -> str:
    return f"{i:07d}"  # leading zeros: must stay text


def _write_csv(path: Path) -> None:
    """ROWS rows with values that need quoting; minimal quoting, one line terminator."""
    rng = random.Random(SEED)
    with path.open("w", encoding=ENCODING, newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HEADER)
        for i in range(ROWS):
            done = rng.random() < 0.1
            writer.writerow(
                [
                    _key(i),
                    "COMPLETED" if done else "PENDING",
                    "2024-01-02T03:04:05Z" if done else "",
                    rng.choice(SUPPLIERS),
                    rng.choice(NOTES),
                    rng.choice(AMOUNTS),
                ]
            )


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(encoding=ENCODING, newline="") as handle:
        records = list(csv.reader(handle, strict=True))
    return records[0], records[1:]


def prepare(tmp_path: Path) -> Path:
    """A 50,000-row CSV imported into a new journal (opened and closed once)."""
    folder = tmp_path / "data"
    folder.mkdir()
    csv_path = folder / "orders.csv"
    _write_csv(csv_path)
    original = csv_path.read_bytes()
    csvjournal.open(csv_path, key=KEY).close()
    assert csv_path.read_bytes() == original  # the same bytes back: nothing recorded
    return csv_path


def integrity(journal_path: Path) -> str:
    with closing(sqlite3.connect(journal_path)) as conn:
        return "\n".join(row[0] for row in conn.execute("PRAGMA integrity_check"))


def temp_files(csv_path: Path) -> list[Path]:
    return sorted(csv_path.parent.glob(f".{csv_path.name}.csvjournal-*"))


def check_csv_against_journal(
    csv_path: Path, journal: csvjournal.Journal, newest: dict[str, tuple[int, str, str]]
) -> None:
    """The CSV shows exactly the journal, and the newest record of each key."""
    header, rows = _read_csv(csv_path)
    frame = journal.to_dataframe()
    assert header == list(frame.columns) == HEADER
    assert len(rows) == len(frame) == ROWS
    assert [row[0] for row in rows] == frame[KEY].tolist()
    assert [row[1] for row in rows] == frame["STATUS"].tolist()
    assert rows == frame.to_numpy().tolist()
    shown = {row[0]: row for row in rows}
    wrong = {
        key: (shown[key][1], shown[key][4], status, note)
        for key, (_, status, note) in newest.items()
        if (shown[key][1], shown[key][4]) != (status, note)
    }
    assert wrong == {}, "CSV rows that do not show their newest record"
