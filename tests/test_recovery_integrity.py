"""A damaged journal: refused by an exporting open and by recover(), naming a sound backup."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner

import csvjournal
from csvjournal.backup import check_backup, copy_journal
from csvjournal.cli import cli

# -- helpers -----------------------------------------------------------------------------


def _leaf_page_of(journal_path: Path, table: str) -> tuple[int, int]:
    """(page number, page size) of a leaf page of ``table`` in the middle of its b-tree."""
    with closing(sqlite3.connect(journal_path)) as conn:
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        leaves = [
            n
            for (n,) in conn.execute(
                "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno",
                (table,),
            )
        ]
    assert len(leaves) >= 3, f"{table} is too small to damage in the middle"
    return leaves[len(leaves) // 2], size


def _damage(journal_path: Path, table: str = "rows") -> None:
    """Overwrite one leaf page of ``table`` in the middle of a closed journal with junk."""
    assert not Path(f"{journal_path}-wal").exists(), "the journal must be closed"
    page, size = _leaf_page_of(journal_path, table)
    with journal_path.open("r+b") as file:
        file.seek((page - 1) * size)
        file.write(bytes(range(7, 256)) * (size // 249) + b"\xa5" * (size % 249))


def _make_journal(csv_path: Path, rows: int, **options: object) -> None:
    """A closed journal of ``rows`` rows with a few fields each."""
    journal = csvjournal.open(csv_path, key="ID", **options)  # type: ignore[arg-type]
    with journal, journal.batch():
        for n in range(rows):
            status = "COMPLETED" if n % 3 else "FAILED"
            journal.record(f"k{n:05d}", status, NOTE=f"note {n} " * 4, N=n)


# -- 3. a damaged journal ----------------------------------------------------------------

CORRUPT_ROWS = 3000


@pytest.mark.parametrize(
    ("table", "export"),
    [
        ("rows", True),
        ("rows", False),
        ("events", True),
        ("sqlite_autoindex_rows_1", True),  # the keys' index
        ("free_rows", True),
    ],
    ids=[
        "rows-exporting",
        "rows-non-exporting",
        "events-exporting",
        "index-exporting",
        "free-rows-exporting",
    ],
)
def test_a_damaged_journal_is_refused_naming_a_backup_that_restores(
    tmp_path: Path, table: str, export: bool
) -> None:
    csv_path = tmp_path / "orders.csv"
    journal_path = Path(f"{csv_path}.journal")
    _make_journal(csv_path, CORRUPT_ROWS, keep_backups=3)
    with csvjournal.open(csv_path, keep_backups=3) as journal:  # a second session
        journal.record("k00001", "COMPLETED")
        good = journal.backup()
    assert check_backup(good, journal_path.name)
    _damage(journal_path, table)
    listing = sorted(p.name for p in Path(f"{csv_path}.backups").iterdir())

    for _ in range(2):  # and again: the refusal released the exporter lock
        with pytest.raises(csvjournal.JournalCorruptError) as caught:
            if export:
                csvjournal.open(csv_path, keep_backups=3)
            else:
                with csvjournal.open(csv_path, export=False) as journal:
                    journal.recover()
        error = caught.value
        assert isinstance(error, RuntimeError)
        assert isinstance(error, csvjournal.CsvJournalError)
        message = str(error)
        assert str(journal_path) in message
        assert str(good) in message, message  # the newest backup, and a sound one
        assert f"csvjournal restore {csv_path} {good}" in message
        # a damaged journal is not backed up: its copy would push sound backups out
        assert sorted(p.name for p in Path(f"{csv_path}.backups").iterdir()) == listing

    safety = csvjournal.restore(csv_path, good, keep_backups=3)
    assert safety is not None
    with csvjournal.open(csv_path) as journal:
        assert journal.recover().integrity == "ok"
        assert len(journal) == CORRUPT_ROWS
        assert journal.get("k00001")["STATUS"] == "COMPLETED"  # type: ignore[index]


def test_a_damaged_journal_kept_elsewhere_names_a_restore_that_works_as_printed(
    tmp_path: Path,
) -> None:
    # The command line finds only a journal beside its CSV: for one opened with
    # journal_path=, the message gives the Python call, which restores as it reads.
    csv_path = tmp_path / "orders.csv"
    journal_path = tmp_path / "elsewhere" / "job.sqlite"
    journal_path.parent.mkdir()
    _make_journal(csv_path, CORRUPT_ROWS, journal_path=journal_path)
    with csvjournal.open(csv_path, journal_path=journal_path) as journal:
        journal.record("k00001", "COMPLETED")
        good = journal.backup()
    _damage(journal_path)
    with pytest.raises(csvjournal.JournalCorruptError) as caught:
        csvjournal.open(csv_path, journal_path=journal_path)
    message = str(caught.value)
    assert "csvjournal restore" not in message  # it would restore orders.csv.journal
    call = message[message.index("csvjournal.restore(") :]
    expected = f"{str(csv_path)!r}, {str(good)!r}, journal_path={str(journal_path)!r}"
    assert call == f"csvjournal.restore({expected})"
    eval(call, {"csvjournal": csvjournal})  # the message's own words, as a user pastes them
    with csvjournal.open(csv_path, journal_path=journal_path) as journal:
        assert journal.recover().integrity == "ok"
        assert journal.get("k00001")["STATUS"] == "COMPLETED"  # type: ignore[index]
    assert not Path(f"{csv_path}.journal").exists()


def test_a_damaged_journal_without_backups_says_so(tmp_path: Path) -> None:
    csv_path = tmp_path / "orders.csv"
    _make_journal(csv_path, CORRUPT_ROWS, keep_backups=0)
    _damage(Path(f"{csv_path}.journal"))
    with pytest.raises(csvjournal.JournalCorruptError, match=r"no backup of .* exists"):
        csvjournal.open(csv_path, keep_backups=0)


def _break_index_definition(journal_path: Path) -> None:
    """Damage that quick_check misses and integrity_check finds: rows missing from an
    index (its definition no longer matches its content)."""
    with closing(sqlite3.connect(journal_path)) as conn:
        conn.execute("PRAGMA writable_schema = ON")
        changed = conn.execute(
            "UPDATE sqlite_master SET sql = replace(sql, 'IS NOT NULL', 'IS NULL')"
            " WHERE name = 'rows_leased'"
        ).rowcount
        conn.commit()
        assert changed == 1
    with closing(sqlite3.connect(journal_path)) as conn:  # reads the schema anew
        assert conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA integrity_check").fetchall() != [("ok",)]


def test_damage_quick_check_misses_is_refused_and_the_sound_backup_named(tmp_path: Path) -> None:
    csv_path = tmp_path / "orders.csv"
    journal_path = Path(f"{csv_path}.journal")
    _make_journal(csv_path, 50)
    with csvjournal.open(csv_path) as journal:
        good = journal.backup()
    _break_index_definition(journal_path)
    before = sorted(Path(f"{csv_path}.backups").iterdir())
    # quick_check would pass this; the exporting open runs the full integrity_check and
    # refuses the journal before its session backup could push a sound backup out
    with pytest.raises(csvjournal.JournalCorruptError) as caught:
        csvjournal.open(csv_path)
    assert sorted(Path(f"{csv_path}.backups").iterdir()) == before
    with csvjournal.open(csv_path, export=False) as journal:  # no check without a session
        with pytest.raises(csvjournal.JournalCorruptError) as refused:
            journal.backup()  # a copy of the damage would push sound backups out
        with pytest.raises(csvjournal.JournalCorruptError) as caught:
            journal.recover()
    assert sorted(Path(f"{csv_path}.backups").iterdir()) == before
    assert f"csvjournal restore {csv_path} {good}" in str(refused.value)
    message = str(caught.value)
    assert "integrity_check" in message
    assert "missing from index rows_leased" in message
    assert f"csvjournal restore {csv_path} {good}" in message
    damaged = tmp_path / "damaged-backup"  # a copy of the damage, made by hand
    damaged.mkdir()
    with closing(sqlite3.connect(journal_path)) as source:
        copy_journal(source, damaged / journal_path.name, journal_path)
    with pytest.raises(csvjournal.JournalCorruptError):
        csvjournal.restore(csv_path, damaged)
    csvjournal.restore(csv_path, good)
    with csvjournal.open(csv_path) as journal:
        assert journal.recover().integrity == "ok"
        assert len(journal) == 50


def _journal_with_a_backup(tmp_path: Path, rows: int) -> tuple[Path, Path]:
    """orders.csv with a journal of ``rows`` rows and a sound backup of it (returned)."""
    csv_path = tmp_path / "orders.csv"
    _make_journal(csv_path, rows, keep_backups=3)
    with csvjournal.open(csv_path, keep_backups=3) as journal:
        return csv_path, journal.backup()


def test_a_journal_sqlite_cannot_read_at_open_is_refused_naming_a_backup(
    tmp_path: Path,
) -> None:
    csv_path, good = _journal_with_a_backup(tmp_path, 50)
    journal_path = Path(f"{csv_path}.journal")
    with closing(sqlite3.connect(journal_path)) as conn:
        ((page,),) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'settings'")
        (size,) = conn.execute("PRAGMA page_size").fetchone()
    with journal_path.open("r+b") as file:  # the page every open reads first
        file.seek((page - 1) * size)
        file.write(b"\xa5" * size)
    # Every open, not only an exporting one, and every command that opens the journal.
    with pytest.raises(csvjournal.JournalCorruptError) as caught:
        csvjournal.open(csv_path, export=False)
    assert f"csvjournal restore {csv_path} {good}" in str(caught.value)
    assert isinstance(caught.value, RuntimeError)
    result = CliRunner().invoke(cli, ["status", str(csv_path)])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "restore" in result.stderr


@pytest.mark.parametrize("export", [True, False], ids=["exporting", "non-exporting"])
def test_a_truncated_journal_is_refused_as_damaged_naming_a_backup(
    tmp_path: Path, export: bool
) -> None:
    csv_path, good = _journal_with_a_backup(tmp_path, 3000)
    journal_path = Path(f"{csv_path}.journal")
    with journal_path.open("r+b") as file:  # a copy cut short, a disk that lost its tail
        file.truncate(journal_path.stat().st_size // 2)
    with pytest.raises(csvjournal.JournalCorruptError) as caught:
        csvjournal.open(csv_path, export=export)
    assert f"csvjournal restore {csv_path} {good}" in str(caught.value)


def test_settings_sqlite_reads_but_no_journal_wrote_are_damage_naming_a_backup(
    tmp_path: Path,
) -> None:
    csv_path, good = _journal_with_a_backup(tmp_path, 50)
    with closing(sqlite3.connect(Path(f"{csv_path}.journal"))) as conn:
        conn.execute("UPDATE settings SET value = '{not json' WHERE name = 'terminal'")
        conn.commit()
    for export in (False, True):
        with pytest.raises(csvjournal.JournalCorruptError) as caught:
            csvjournal.open(csv_path, export=export)
        assert f"csvjournal restore {csv_path} {good}" in str(caught.value)


@pytest.mark.parametrize(
    "damage",
    [
        "DELETE FROM settings WHERE name = 'key_column'",
        "DELETE FROM settings WHERE name = 'dialect'",
        "DELETE FROM settings",
    ],
    ids=["no key column", "no dialect", "no settings at all"],
)
def test_settings_missing_from_a_journal_with_rows_are_damage_not_a_new_journal(
    tmp_path: Path, damage: str
) -> None:
    # Not an unfinished creation to import again (that fails on the rows there), nor a
    # journal to export with a default dialect (a ';' file turned half ','): damage.
    csv_path, good = _journal_with_a_backup(tmp_path, 50)
    journal_path = Path(f"{csv_path}.journal")
    with closing(sqlite3.connect(journal_path)) as conn:
        conn.execute(damage)
        conn.commit()
    before = csv_path.read_bytes()
    for kwargs in ({}, {"key": "ID"}, {"export": False}):
        with pytest.raises(csvjournal.JournalCorruptError, match="setting") as caught:
            csvjournal.open(csv_path, **kwargs)  # type: ignore[arg-type]
        assert f"csvjournal restore {csv_path} {good}" in str(caught.value)
    assert csv_path.read_bytes() == before
