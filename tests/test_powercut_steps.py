"""Power cuts after every sync of a whole operation: an import, a schema upgrade, a restore,
a merge of hand edits.

The shim kills the child process right after its Nth sync, for each N in turn: since only
syncs change what a power cut leaves (:mod:`_powercut`), that visits every state the
operation can be cut off in. Each must reopen to the old journal or the new one, lose no
row, and never take csvjournal's own CSV for a hand edit.
"""

from __future__ import annotations

import csv
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from _children import script
from _powercut import Disk, cut_after_every_sync, integrity

import csvjournal
from csvjournal.backup import list_backups

pytestmark = pytest.mark.slow

_RESTORER = """
csv_path, backup = sys.argv[1:3]
csvjournal.restore(csv_path, backup, keep_backups=0)
"""


def _keys(journal_path: Path) -> set[str]:
    with closing(sqlite3.connect(journal_path)) as conn:
        return {key for (key,) in conn.execute("SELECT key FROM rows")}


def test_a_power_cut_at_any_point_of_a_restore_leaves_one_journal_or_the_other(
    tmp_path: Path, shim: Path
) -> None:
    old = {f"old-{i}" for i in range(20)}
    new = old | {f"new-{i}" for i in range(20)}

    def prepare(disk: Disk) -> list[str]:
        csv_path = disk.root / "orders.csv"
        with csvjournal.open(csv_path, key="ID", keep_backups=0) as journal:
            for key in sorted(old):
                journal.record(key, "COMPLETED")
            backup = journal.backup()
            for key in sorted(new - old):
                journal.record(key, "COMPLETED")
        return [str(csv_path), str(backup)]

    def check(disk: Disk) -> None:
        csv_path = disk.root / "orders.csv"
        journal_path = Path(f"{csv_path}.journal")
        assert integrity(journal_path) == "ok"
        found = _keys(journal_path)
        assert found in (new, old)
        if found == old:  # restored: the journal it replaced is in a backup, whole
            assert new in [_keys(b / "orders.csv.journal") for b in list_backups(csv_path)]
        with csvjournal.open(csv_path, keep_backups=0) as journal:  # no hand-edit alarm
            journal.flush(timeout=60)
        assert {row["ID"] for row in csv.DictReader(csv_path.open(newline=""))} == found

    child = script(tmp_path, "restorer", _RESTORER)
    assert cut_after_every_sync(tmp_path, shim, child, prepare, check) > 3


_OPENER = """
csvjournal.open(sys.argv[1]).close()  # upgrades the journal's schema, after a backup
"""


def _revision(journal_path: Path) -> str:
    with closing(sqlite3.connect(journal_path)) as conn:
        return str(conn.execute("SELECT version_num FROM alembic_version").fetchone()[0])


def test_a_power_cut_at_any_point_of_a_schema_upgrade_loses_nothing(
    tmp_path: Path, shim: Path
) -> None:
    fixture = Path(__file__).parent / "fixtures" / "journal-0001.sqlite"

    def prepare(disk: Disk) -> list[str]:
        csv_path = disk.root / "orders.csv"
        Path(f"{csv_path}.journal").write_bytes(fixture.read_bytes())
        return [str(csv_path)]

    def check(disk: Disk) -> None:
        csv_path = disk.root / "orders.csv"
        journal_path = Path(f"{csv_path}.journal")
        assert integrity(journal_path) == "ok"
        if _revision(journal_path) != "0001":  # upgraded: the old journal is backed up
            assert "0001" in {_revision(b / "orders.csv.journal") for b in list_backups(csv_path)}
        with csvjournal.open(csv_path, keep_backups=0) as journal:  # finishes the upgrade
            assert journal.get("PO-1")["SUPPLIER"] == 'Müller; "GmbH"'  # type: ignore[index]
            assert [e.status for e in journal.history("PO-2")] == ["FAILED", "NO_ATTACHMENTS"]
            assert journal.pending() == ["PO-3"]
        assert _revision(journal_path) != "0001"

    child = script(tmp_path, "opener", _OPENER)
    assert cut_after_every_sync(tmp_path, shim, child, prepare, check) > 3


def _write_sheet(csv_path: Path, rows: int) -> None:
    csv_path.write_text("ID,NAME\n" + "".join(f"k{i},name {i}\n" for i in range(rows)))


_IMPORTER = """
csvjournal.open(sys.argv[1], key="ID").close()  # imports the CSV into a new journal
"""


def test_a_power_cut_at_any_point_of_an_import_leaves_a_csv_to_import_again(
    tmp_path: Path, shim: Path
) -> None:
    def prepare(disk: Disk) -> list[str]:
        csv_path = disk.root / "orders.csv"
        _write_sheet(csv_path, 50)
        return [str(csv_path)]

    def check(disk: Disk) -> None:
        csv_path = disk.root / "orders.csv"
        with csvjournal.open(csv_path, key="ID", keep_backups=0) as journal:
            assert len(journal) == 50
            assert journal.get("k7")["NAME"] == "name 7"  # type: ignore[index]
            assert journal.pending()[:2] == ["k0", "k1"]

    child = script(tmp_path, "importer", _IMPORTER)
    assert cut_after_every_sync(tmp_path, shim, child, prepare, check) > 3


_MERGER = """
csvjournal.merge_csv(sys.argv[1])  # brings the hand edits of the CSV into the journal
"""


def test_a_power_cut_at_any_point_of_a_merge_is_undone_by_merging_again(
    tmp_path: Path, shim: Path
) -> None:
    def prepare(disk: Disk) -> list[str]:
        csv_path = disk.root / "orders.csv"
        _write_sheet(csv_path, 30)
        with csvjournal.open(csv_path, key="ID", keep_backups=0) as journal:
            journal.record("k1", "COMPLETED")
        text = csv_path.read_text().replace("k2,name 2,", "k2,renamed,") + "added,new row,,\n"
        csv_path.write_text(text)  # edited by hand
        return [str(csv_path)]

    def check(disk: Disk) -> None:
        csv_path = disk.root / "orders.csv"
        assert integrity(Path(f"{csv_path}.journal")) == "ok"
        csvjournal.merge_csv(csv_path)  # what a user does after the crash: merge again
        with csvjournal.open(csv_path, keep_backups=0) as journal:  # no hand-edit alarm
            assert len(journal) == 31
            assert journal.get("k2")["NAME"] == "renamed"  # type: ignore[index]
            assert journal.get("added")["NAME"] == "new row"  # type: ignore[index]
            assert journal.get("k1")["STATUS"] == "COMPLETED"  # type: ignore[index]

    child = script(tmp_path, "merger", _MERGER)
    assert cut_after_every_sync(tmp_path, shim, child, prepare, check) > 1
