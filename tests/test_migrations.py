"""Schema creation, upgrades from every released revision, refusal of newer schemas."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from _oldjournals import FIXTURES, NOTING, OLDER
from sqlalchemy import create_engine, inspect

import csvjournal
from csvjournal import _migrate, _schema
from csvjournal.csvio import render_csv

FIXTURES_BY_REVISION = {path.stem.removeprefix("journal-"): path for path in FIXTURES}


def _revision(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("SELECT version_num FROM alembic_version").fetchone()[0])
    finally:
        conn.close()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_new_journal_is_created_by_migrations_at_the_head_revision(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        path = journal.journal_path
    assert _revision(path) == _migrate.head_revision()


def test_migrations_build_exactly_the_tables_the_code_queries(csv_path: Path) -> None:
    csvjournal.open(csv_path, key="ID").close()
    inspector = inspect(create_engine(f"sqlite:///{csv_path}.journal"))
    for table in _schema.metadata.sorted_tables:
        migrated = {column["name"] for column in inspector.get_columns(table.name)}
        assert migrated == {column.name for column in table.columns}, table.name
        indexes = {index["name"] for index in inspector.get_indexes(table.name)}
        assert {index.name for index in table.indexes} <= indexes, table.name


def test_the_known_revisions_are_the_migration_scripts() -> None:
    assert list(_migrate.KNOWN_REVISIONS) == _migrate.script_revisions()


def test_there_is_a_fixture_for_the_head_revision() -> None:
    # Keep one journal per released revision: python tests/fixtures/make_journal_fixture.py
    assert any(path.stem == f"journal-{_migrate.head_revision()}" for path in FIXTURES)


@pytest.mark.parametrize("fixture", FIXTURES, ids=[path.stem for path in FIXTURES])
def test_every_released_revision_upgrades_with_its_data(fixture: Path, tmp_path: Path) -> None:
    csv = tmp_path / "orders.csv"
    shutil.copyfile(fixture, f"{csv}.journal")
    with csvjournal.open(csv) as journal:
        assert journal.settings.key_column == "PO_NUMBER"
        assert journal.settings.terminal == {"COMPLETED", "NO_ATTACHMENTS"}
        assert journal.get("PO-1")["SUPPLIER"] == 'Müller; "GmbH"'  # type: ignore[index]
        assert journal.get("PO-2")["STATUS"] == "NO_ATTACHMENTS"  # type: ignore[index]
        assert journal.get("PO-2")["ERROR_MESSAGE"] == "timeout\nretry later"  # type: ignore[index]
        assert [e.status for e in journal.history("PO-2")] == ["FAILED", "NO_ATTACHMENTS"]
        assert journal.pending() == ["PO-3"]
        journal.record("PO-4", "COMPLETED")  # and it takes new records
        path = journal.journal_path
    assert _revision(path) == _migrate.head_revision()


@pytest.mark.parametrize("fixture", OLDER, ids=[path.stem for path in OLDER])
@pytest.mark.parametrize(
    "conflict",
    [{"key": "ID"}, {"status_column": "STATE"}, {"timestamp_column": "WHEN"}],
    ids=["key", "status_column", "timestamp_column"],
)
def test_an_open_refused_for_its_arguments_leaves_an_older_schema_as_it_was(
    fixture: Path, conflict: dict[str, str], tmp_path: Path
) -> None:
    csv = tmp_path / "orders.csv"
    journal = Path(f"{csv}.journal")
    shutil.copyfile(fixture, journal)
    before = _digest(journal)
    with pytest.raises(csvjournal.SettingsError, match="conflicts with the journal's"):
        csvjournal.open(csv, **conflict)  # type: ignore[arg-type]
    assert _digest(journal) == before  # not upgraded: an older csvjournal still opens it
    backups = tmp_path / "orders.csv.backups"
    assert not backups.exists() or [p.name for p in backups.iterdir()] == ["writer.lock"]
    with csvjournal.open(csv) as opened:  # the same arguments as before are still welcome
        assert opened.settings.key_column == "PO_NUMBER"
    assert _revision(journal) == _migrate.head_revision()


@pytest.mark.parametrize("fixture", NOTING, ids=[path.stem for path in NOTING])
def test_an_open_refused_for_a_hand_edited_csv_leaves_an_older_schema_as_it_was(
    fixture: Path, tmp_path: Path
) -> None:
    csv = tmp_path / "orders.csv"
    journal = Path(f"{csv}.journal")
    shutil.copyfile(fixture, journal)
    csv.write_text("PO_NUMBER,STATUS\nPO-1,EDITED BY HAND\n", encoding="utf-8")
    before = _digest(journal)
    with pytest.raises(csvjournal.CsvChangedError, match="import --merge"):
        csvjournal.open(csv)
    assert _digest(journal) == before  # not upgraded: an older csvjournal still opens it
    backups = tmp_path / "orders.csv.backups"
    assert not backups.exists() or [p.name for p in backups.iterdir()] == ["writer.lock"]
    assert csv.read_text(encoding="utf-8") == "PO_NUMBER,STATUS\nPO-1,EDITED BY HAND\n"
    csv.unlink()  # as the error says: the CSV is written anew from the journal
    with csvjournal.open(csv) as opened:
        assert opened.get("PO-1")["STATUS"] != "EDITED BY HAND"  # type: ignore[index]
    assert _revision(journal) == _migrate.head_revision()
    assert "PO-3" in csv.read_text(encoding="utf-8")


def _make_newer(csv_path: Path) -> Path:
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a", "COMPLETED")
        path = journal.journal_path
    conn = sqlite3.connect(path)
    conn.execute("UPDATE alembic_version SET version_num = 'ffff9999'")
    conn.commit()
    conn.close()
    return path


def test_a_journal_from_a_newer_csvjournal_is_refused_before_any_write(csv_path: Path) -> None:
    path = _make_newer(csv_path)
    before = _digest(path)
    files_before = sorted(p.name for p in path.parent.iterdir())
    with pytest.raises(csvjournal.SchemaTooNewError, match="ffff9999") as caught:
        csvjournal.open(csv_path, key="ID")
    assert str(path) in str(caught.value)
    assert isinstance(caught.value, RuntimeError)
    assert _digest(path) == before
    assert sorted(p.name for p in path.parent.iterdir()) == files_before


def test_a_newer_journal_is_refused_even_in_rollback_journal_mode(csv_path: Path) -> None:
    # WAL mode is switched on only after the check: a non-WAL file keeps every byte.
    path = _make_newer(csv_path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()
    before = _digest(path)
    with pytest.raises(csvjournal.SchemaTooNewError):
        csvjournal.open(csv_path)
    assert _digest(path) == before


def test_a_newer_journal_whose_stamp_is_in_a_hot_wal_is_refused_leaving_it_as_it_was(
    csv_path: Path, tmp_path: Path
) -> None:
    # A newer csvjournal killed with its commits still in the -wal: refused without a
    # checkpoint, so the journal file and its -wal keep every byte.
    copy = tmp_path / "copy"
    copy.mkdir()
    path = Path(f"{csv_path}.journal")
    csvjournal.open(csv_path, key="ID").close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("UPDATE alembic_version SET version_num = 'ffff9999'")
    conn.commit()
    for suffix in ("", "-wal"):  # the files as a killed process leaves them
        shutil.copyfile(f"{path}{suffix}", copy / f"{path.name}{suffix}")
    conn.close()
    for suffix in ("", "-wal"):
        shutil.copyfile(copy / f"{path.name}{suffix}", f"{path}{suffix}")
    Path(f"{path}-shm").unlink(missing_ok=True)
    before = {suffix: _digest(Path(f"{path}{suffix}")) for suffix in ("", "-wal")}
    for kwargs in ({}, {"key": "ID"}, {"export": False}):
        with pytest.raises(csvjournal.SchemaTooNewError, match="ffff9999"):
            csvjournal.open(csv_path, **kwargs)  # type: ignore[arg-type]
        assert {suffix: _digest(Path(f"{path}{suffix}")) for suffix in ("", "-wal")} == before
    assert not Path(f"{path}-shm").exists()


def test_migrations_are_found_from_the_package() -> None:
    location = _migrate._script_location()
    assert (location / "env.py").is_file()
    assert any((location / "versions").glob("0001_*.py"))


def _downgrade(path: Path, revision: str) -> None:
    """Down to ``revision`` (csvjournal itself only ever upgrades, at open)."""
    from alembic import command
    from alembic.config import Config

    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            cfg = Config(attributes={"connection": conn})
            cfg.set_main_option("script_location", str(_migrate._script_location()))
            command.downgrade(cfg, revision)
    finally:
        engine.dispose()


def test_the_event_chain_survives_a_trip_through_the_event_lists_of_revision_0003(
    csv_path: Path,
) -> None:
    # 0003 kept each row's events as a JSON array; 0004 links each event to the row's one
    # before it. Down to 0003 and up again must give every row the same history.
    with csvjournal.open(csv_path, key="ID", export=False) as journal:
        for i in range(300):  # interleaved keys, some recorded once, some many times
            journal.record(f"k{(i * 7) % 23}", "COMPLETED" if i % 5 == 0 else None, N=i)
        with journal.batch():
            for i in range(40):
                journal.record(f"k{i % 3}", N=f"batch {i}")
        keys = [f"k{i}" for i in range(23)]
        before = {
            key: [(e.seq, e.status, dict(e.fields)) for e in journal.history(key)] for key in keys
        }
        path = journal.journal_path
    _downgrade(path, "0003")
    conn = sqlite3.connect(path)
    try:
        arrays = dict(conn.execute("SELECT key, seqs FROM rows"))
    finally:
        conn.close()
    assert {key: [seq for seq, _, _ in trail] for key, trail in before.items()} == {
        key: json.loads(arrays[key]) for key in keys
    }
    with csvjournal.open(csv_path, export=False) as journal:  # upgrades it, as for a user
        after = {
            key: [(e.seq, e.status, dict(e.fields)) for e in journal.history(key)] for key in keys
        }
        journal.record("k1", N="after the trip")
        assert journal.history("k1")[-1].fields == {"N": "after the trip"}
        assert [e.seq for e in journal.history("k1")][:-1] == [seq for seq, _, _ in before["k1"]]
    assert after == before
    assert sum(map(len, before.values())) == 340


def _free_and_listed(path: Path) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    conn = sqlite3.connect(path)
    try:
        free = conn.execute(
            "SELECT pos, key, attempts FROM rows WHERE done = 0 AND lease_until IS NULL"
            " ORDER BY pos"
        ).fetchall()
        listed = conn.execute("SELECT pos, key, attempts FROM free_rows ORDER BY pos").fetchall()
    finally:
        conn.close()
    return free, listed


def test_the_free_rows_survive_a_trip_through_the_index_of_revision_0004(csv_path: Path) -> None:
    # 0004 found free rows through a partial index; 0005 lists them in a table that
    # triggers keep. Down and up again: the same rows pending, claimable, with their attempts.
    with csvjournal.open(csv_path, key="ID", terminal={"COMPLETED"}, export=False) as journal:
        for i in range(60):
            journal.record(f"k{i:02d}", "COMPLETED" if i % 4 == 0 else None)
        journal.claim(5, lease=600, worker="held")  # leased: not free
        journal.claim(3, lease=600, worker="failed")
        for key in ("k05", "k06", "k07"):
            journal.record(key, "FAILED")  # free again, one attempt each
        pending = journal.pending()
        path = journal.journal_path
        # close() gives the held rows back, then the trip
    free, listed = _free_and_listed(path)
    assert listed == free
    assert len(free) == 45
    assert {attempts for _, _, attempts in free} == {0, 1}
    _downgrade(path, "0004")
    conn = sqlite3.connect(path)
    try:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()
    assert "rows_free" in tables
    assert "free_rows" not in tables
    with csvjournal.open(csv_path, export=False) as journal:
        assert _free_and_listed(path) == (free, free)
        assert journal.pending() == [key for _, key, _ in free]
        assert set(pending) <= set(journal.pending())
        taken = journal.claim(2, lease=600, max_attempts=1)
        assert taken == [key for _, key, attempts in free if attempts == 0][:2]
        now_free, now_listed = _free_and_listed(path)  # the triggers came back up too
        assert now_listed == now_free == [row for row in free if row[1] not in taken]


def test_journals_are_created_and_upgraded_from_several_threads_at_once(tmp_path: Path) -> None:
    # alembic keeps its migration context in module globals: two migrations at once in
    # one process must take turns.
    old = FIXTURES[0]
    paths = [tmp_path / f"old{i}.csv" for i in range(4)] + [
        tmp_path / f"new{i}.csv" for i in range(4)
    ]
    for path in paths[:4]:
        shutil.copyfile(old, f"{path}.journal")

    def open_and_close(path: Path) -> str:
        csvjournal.open(path, key="PO_NUMBER", export=False, keep_backups=0).close()
        return _revision(Path(f"{path}.journal"))

    with ThreadPoolExecutor(8) as pool:
        revisions = list(pool.map(open_and_close, paths))
    assert revisions == [_migrate.head_revision()] * 8


def test_records_stored_before_0006_are_completed_for_a_new_column(tmp_path: Path) -> None:
    # 0006 adds rows.line_columns: NULL for every record stored before, read as the count
    # in lines_format; a new column completes them as they are read, voiding none.
    csv = tmp_path / "orders.csv"
    shutil.copyfile(FIXTURES_BY_REVISION["0005"], f"{csv}.journal")
    with csvjournal.open(csv) as journal:
        width = len(journal.to_dataframe().columns)
        journal.record("PO-3", NOTE="a new column")
        journal.flush()
        frame = journal.to_dataframe()
        expected = render_csv(list(frame.columns), frame.values.tolist(), journal.settings.dialect)
        stored = _line_columns(journal.journal_path)
        journal.export(tmp_path / "copy.csv")
    assert csv.read_bytes() == expected
    assert (tmp_path / "copy.csv").read_bytes() == expected
    assert stored["PO-1"] is None  # as 0005 stored them, completed as read
    assert stored["PO-2"] is None
    assert stored.get("PO-3", width + 1) == width + 1  # once the exporter stored it


def _line_columns(path: Path) -> dict[str, int | None]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT key, line_columns FROM rows WHERE line IS NOT NULL"))
    finally:
        conn.close()
