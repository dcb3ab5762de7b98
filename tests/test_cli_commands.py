"""The journal commands: init, record, history, export, import, recover, backups, upgrade."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _cli import (
    assert_error,
    events,
    invoke,
    ok,
    orders_fixture,  # noqa: F401
    read_rows,
    state_of,
    statuses,
)
from _exporter import write_protect
from _oldjournals import NOTING

import csvjournal
from csvjournal import _migrate
from csvjournal.csvio import temp_prefix

FIXTURES = Path(__file__).parent / "fixtures"


# -- init ------------------------------------------------------------------------------


def test_init_imports_the_csv_and_appends_the_status_columns(orders: Path) -> None:
    assert orders.read_text(encoding="utf-8").splitlines() == [
        "PO_NUMBER,SUPPLIER,AMOUNT,STATUS,LAST_PROCESSED",
        "PO-1,ACME,10.00,PENDING,",
        'PO-2,"Müller; ""GmbH""",00200,PENDING,',
        "PO-3,Tanaka,3,PENDING,",
    ]
    data = json.loads(ok(invoke("status", orders, "--json")))
    assert data["terminal"] == ["COMPLETED", "NO_ATTACHMENTS"]


def test_import_merge_says_which_columns_the_csv_lacks(orders: Path) -> None:
    text = orders.read_text(encoding="utf-8").replace("PO_NUMBER,SUPPLIER,", "PO_NUMBER,Supplier,")
    orders.write_text(text, encoding="utf-8")  # a column renamed in the sheet
    out = ok(invoke("import", orders, "--merge")).splitlines()
    assert out[1:] == [
        "  columns added: 'Supplier'",
        "  columns the CSV lacks (kept as they are: one renamed is added anew): 'SUPPLIER'",
    ]


def test_init_twice_is_refused_and_changes_nothing(orders: Path) -> None:
    before = state_of(orders.parent)
    assert_error(invoke("init", orders, "--key", "PO_NUMBER"), "already exists")
    assert state_of(orders.parent) == before
    # not even SQLite's -wal/-shm, which the look at the journal had to make
    assert not list(orders.parent.glob("*.journal-*"))


def test_import_merge_reports_columns_and_kept_keys_and_json(orders: Path) -> None:
    ok(invoke("record", orders, "PO-3", "--status", "COMPLETED"))
    text = orders.read_text(encoding="utf-8").replace("PO-3,Tanaka,3,COMPLETED", "PO-3,Tanaka,3,")
    lines = text.splitlines()
    lines = [f"{lines[0]},NOTE"] + [f"{line},n" for line in lines[1:]]
    orders.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = ok(invoke("import", orders, "--merge")).splitlines()
    assert out[1:] == [
        "  columns added: 'NOTE'",
        "  terminal rows kept (their status in the file not taken): 'PO-3'",
    ]
    data = json.loads(ok(invoke("import", orders, "--merge", "--json")))
    assert data == {
        "csv": str(orders),
        "added": [],
        "updated": [],
        "terminal_kept": [],
        "missing": [],
        "newer_kept": [],
        "added_columns": [],
        "leased_kept": [],
        "missing_columns": [],
        "unedited": True,  # the CSV the first merge's export wrote: no edit in it
    }


def test_an_error_naming_a_path_with_a_line_break_stays_one_line(tmp_path: Path) -> None:
    csv = tmp_path / "new\nline.csv"
    line = assert_error(invoke("status", csv), "no journal for")
    assert "new\\nline.csv" in line
    csv = tmp_path / "Q4  orders\n.csv"  # from the library: two spaces stay two
    csv.write_text("ID\n1\n1\n")
    line = assert_error(invoke("init", csv, "--key", "ID"), "duplicate key")
    assert "Q4  orders\\n.csv" in line


@pytest.mark.parametrize(
    ("content", "args", "fragments"),
    [
        ("ID,NAME\n1,a\n", ["--key", "NOPE"], ["NOPE"]),
        ("ID,NAME\n1,a\n2,b\n1,c\n", ["--key", "ID"], ["duplicate", "line 4"]),
        ("ID,NAME\n1,a\n,b\n", ["--key", "ID"], ["empty", "line 3"]),
        ('ID,NAME\n1,"open\n', ["--key", "ID"], ["quote"]),
        ("ID,NAME\n1,a,extra\n", ["--key", "ID"], ["line 2"]),
        ("ID,NAME\n1,a\n", ["--key", "ID", "--terminal", " , "], ["--terminal"]),
        # a byte of the command line that was not text (Python's surrogate escape)
        ("ID,NAME\n1,a\n", ["--key", "ID", "--terminal", "DONE\udcff"], ["no character"]),
    ],
)
def test_init_refuses_bad_input_and_creates_nothing(
    tmp_path: Path, content: str, args: list[str], fragments: list[str]
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    before = state_of(tmp_path)
    assert_error(invoke("init", path, *args), *fragments)
    assert state_of(tmp_path) == before


# -- record ----------------------------------------------------------------------------


def test_record_updates_the_row_and_the_csv(orders: Path) -> None:
    out = ok(
        invoke(
            "record", orders, "PO-2", "--status", "COMPLETED",
            "ATTACHMENTS_FOUND=3", "L1 UU Supplier Name=MÜLLER", "NOTE=a=b; c", "EMPTY=",
        )
    )  # fmt: skip
    assert re.fullmatch(r"recorded #\d+\n", out)
    row = read_rows(orders)[1]
    assert list(row) == [
        "PO_NUMBER", "SUPPLIER", "AMOUNT", "STATUS", "LAST_PROCESSED",
        "ATTACHMENTS_FOUND", "L1 UU Supplier Name", "NOTE", "EMPTY",
    ]  # fmt: skip
    assert row["STATUS"] == "COMPLETED"
    assert row["ATTACHMENTS_FOUND"] == "3"
    assert row["L1 UU Supplier Name"] == "MÜLLER"
    assert row["NOTE"] == "a=b; c"
    assert row["EMPTY"] == ""
    assert row["LAST_PROCESSED"].endswith("Z")
    assert row["AMOUNT"] == "00200"
    second = ok(invoke("record", orders, "PO-2", "NOTE=again"))  # the status stays
    assert int(second.split("#")[1]) > int(out.split("#")[1])
    assert statuses(orders, "PO_NUMBER")["PO-2"] == "COMPLETED"
    assert read_rows(orders)[1]["NOTE"] == "again"


def test_record_says_what_it_recorded_when_the_csv_cannot_be_written(
    orders: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = orders.read_bytes()
    write_protect(monkeypatch, orders)
    result = invoke("record", orders, "PO-1", "--status", "COMPLETED")
    seq = int(result.stdout.removeprefix("recorded #"))  # a script must not record it again
    # one line: the exporter's logs of the failure are not repeated before it
    assert result.exit_code == 2
    [error] = result.stderr.splitlines()
    assert error.startswith(f"csvjournal: error: recorded #{seq}, but the CSV was not brought")
    assert "write-protected" in error
    assert "tries again" not in error  # nothing does: the command is over
    assert orders.read_bytes() == before
    monkeypatch.undo()
    ok(invoke("export", orders))  # writable again: the record reaches the CSV
    assert "PO-1,ACME,10.00,COMPLETED," in orders.read_text(encoding="utf-8")


def test_init_and_export_fail_when_the_csv_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # init said "created" and exited 0, the CSV without its status columns; export's line
    # promised a retry that nothing makes once the command is over
    csv = tmp_path / "o.csv"
    csv.write_text("ID,N\n1,a\n")
    write_protect(monkeypatch, csv)
    result = invoke("init", csv, "--key", "ID")
    assert result.exit_code == 2
    assert result.stdout == f"created {csv}.journal: 1 row, key column ID\n"
    [error] = result.stderr.splitlines()
    assert error.startswith(f"csvjournal: error: created {csv}.journal, but the CSV was not")
    assert "write-protected" in error
    assert csv.read_text() == "ID,N\n1,a\n"
    result = invoke("export", csv)
    assert result.exit_code == 2
    [error] = result.stderr.splitlines()
    assert "write-protected" in error
    assert "tries again" not in error
    monkeypatch.undo()
    ok(invoke("export", csv))
    assert csv.read_text().startswith("ID,N,STATUS,LAST_PROCESSED\n")


def test_a_short_command_shows_the_librarys_warnings_once_it_succeeded(orders: Path) -> None:
    result = invoke("record", orders, "PO-1", "NOTE=" + "x" * 32_768)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("recorded #")
    assert "excel_cell_limit_exceeded" in result.stderr


def test_record_new_adds_a_row(orders: Path) -> None:
    ok(invoke("record", orders, "PO-9", "--new", "--status", "COMPLETED", "SUPPLIER=New"))
    rows = read_rows(orders)
    assert [row["PO_NUMBER"] for row in rows] == ["PO-1", "PO-2", "PO-3", "PO-9"]
    assert rows[3]["SUPPLIER"] == "New"


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["PO-9", "--status", "COMPLETED"], ["no row with key 'PO-9'", "--new"]),
        (["PO-1", "NOEQUALS"], ["bad FIELD=VALUE 'NOEQUALS'"]),
        (["PO-1", "=value"], ["bad FIELD=VALUE '=value'"]),
        (["PO-1", "A=1", "B"], ["bad FIELD=VALUE 'B'"]),
        (["PO-1", "NOTE=first", "NOTE=second"], ["field 'NOTE' given twice"]),
    ],
)
def test_record_refuses_bad_input_and_changes_nothing(
    orders: Path, args: list[str], fragments: list[str]
) -> None:
    before = state_of(orders.parent)
    assert_error(invoke("record", orders, *args), *fragments)
    assert state_of(orders.parent) == before


def test_record_refuses_a_csv_edited_by_hand_before_recording(orders: Path) -> None:
    with orders.open("a") as handle:
        handle.write("PO-4,Hand,1,PENDING,\n")
    before = state_of(orders.parent)
    assert_error(invoke("record", orders, "PO-1", "--status", "COMPLETED"), "import --merge")
    assert state_of(orders.parent) == before
    assert events(orders, "PO-1") == []


# -- history ---------------------------------------------------------------------------


def test_history_shows_every_event_of_a_row(orders: Path) -> None:
    ok(invoke("record", orders, "PO-1", "--status", "FAILED", "ERROR_MESSAGE=boom"))
    ok(invoke("record", orders, "PO-1", "--status", "COMPLETED", "ERROR_MESSAGE="))
    ok(invoke("record", orders, "PO-2", "NOTE=other row"))
    lines = ok(invoke("history", orders, "PO-1")).splitlines()
    assert len(lines) == 2
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert re.fullmatch(rf"#1 {stamp} FAILED ERROR_MESSAGE='boom' by \S+", lines[0]), lines
    assert re.fullmatch(rf"#2 {stamp} COMPLETED ERROR_MESSAGE='' by \S+", lines[1]), lines
    never = invoke("history", orders, "PO-3")  # imported with the CSV, never recorded
    assert ok(never) == ""
    assert never.stderr == "no events for 'PO-3' yet: imported with the CSV, never recorded\n"


def test_history_json(orders: Path) -> None:
    ok(invoke("record", orders, "PO-3", "--status", "COMPLETED", "ATTACHMENTS_FOUND=2"))
    found = events(orders, "PO-3")
    assert len(found) == 1
    event = found[0]
    assert set(event) == {"seq", "key", "status", "fields", "at", "worker", "pid", "note"}
    assert event["seq"] == 1
    assert event["key"] == "PO-3"
    assert event["status"] == "COMPLETED"
    assert event["fields"] == {"ATTACHMENTS_FOUND": "2"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", str(event["at"]))
    assert isinstance(event["pid"], int)
    assert isinstance(event["worker"], str)
    assert event["worker"]
    assert event["note"] is None


def test_history_of_an_unknown_key_is_an_error(orders: Path) -> None:
    assert_error(invoke("history", orders, "PO-404"), "no row with key 'PO-404'")
    assert_error(invoke("history", orders, "po-1", "--json"), "'po-1'")  # case-sensitive


# -- export and import ------------------------------------------------------------------


def test_export_rewrites_the_csv_and_writes_copies(orders: Path, tmp_path: Path) -> None:
    ok(invoke("record", orders, "PO-1", "--status", "COMPLETED"))
    current = orders.read_bytes()
    assert ok(invoke("export", orders)) == f"{orders} is current: it already shows every record\n"
    assert orders.read_bytes() == current
    copy = tmp_path / "copy.csv"
    assert ok(invoke("export", orders, "--to", copy)) == f"wrote {copy}\n"
    assert copy.read_bytes() == current
    orders.unlink()  # deleted: regenerated from the journal
    assert ok(invoke("export", orders)) == f"wrote {orders}\n"
    assert orders.read_bytes() == current


def test_export_refuses_to_overwrite_hand_edits(orders: Path) -> None:
    orders.write_text(orders.read_text().replace("ACME", "ACME (edited)"))
    before = state_of(orders.parent)
    assert_error(invoke("export", orders), "edited by hand", "csvjournal import --merge")
    assert state_of(orders.parent) == before


def test_import_merge_brings_hand_edits_in(orders: Path) -> None:
    ok(invoke("record", orders, "PO-3", "--status", "COMPLETED"))
    text = orders.read_text(encoding="utf-8")
    text = text.replace("PO-1,ACME,10.00", "PO-1,ACME Corp,10.00")
    text = text.replace("PO-3,Tanaka,3,COMPLETED", "PO-3,Tanaka,3,PENDING")
    orders.write_text(text + "PO-4,New,4,PENDING,\n", encoding="utf-8")
    out = ok(invoke("import", orders, "--merge"))
    assert out.startswith(f"merged {orders}: 1 added, ")
    assert "1 terminal rows kept" in out
    assert "0 missing from the CSV" in out
    rows = {row["PO_NUMBER"]: row for row in read_rows(orders)}
    assert rows["PO-1"]["SUPPLIER"] == "ACME Corp"
    assert rows["PO-3"]["STATUS"] == "COMPLETED"  # a terminal row never moves back
    assert rows["PO-4"]["SUPPLIER"] == "New"
    assert ok(invoke("pending", orders)).split() == ["PO-1", "PO-2", "PO-4"]
    ok(invoke("record", orders, "PO-4", "--status", "COMPLETED"))  # the CSV is ours again


# -- recover ---------------------------------------------------------------------------


def test_recover_reports_what_it_did(orders: Path) -> None:
    assert ok(invoke("recover", orders)).splitlines() == [
        "integrity check: ok",
        "expired leases returned to PENDING: 0",
        "temporary files removed: 0",
        "CSV: already current",
        "pending rows: 3",
    ]


@pytest.mark.slow
def test_recover_json_after_a_crash(orders: Path) -> None:
    # a worker process that dies holding a short lease, a half-written temp file, no CSV
    code = (
        "import csvjournal, os, sys\n"
        "j = csvjournal.open(sys.argv[1], export=False)\n"
        "j.claim(1, lease=1.0, worker='lost-worker')\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(orders)], check=True, timeout=120)
    temp = orders.parent / f"{temp_prefix(orders)}crashed"
    temp.write_text("half a CSV")
    orders.unlink()
    time.sleep(1.2)  # the lease runs out
    data = json.loads(ok(invoke("recover", orders, "--json")))
    assert data == {
        "schema_upgraded": None,
        "integrity": "ok",
        "expired": [{"key": "PO-1", "worker": "lost-worker"}],
        "temp_files_removed": [str(temp)],
        "csv_was_stale": True,
        "pending": 3,
    }
    assert not temp.exists()
    assert statuses(orders, "PO_NUMBER") == {
        "PO-1": "PENDING",
        "PO-2": "PENDING",
        "PO-3": "PENDING",
    }
    last = events(orders, "PO-1")[-1]
    assert last["status"] == "PENDING"
    assert "lost-worker" in str(last["note"])


# -- backups ---------------------------------------------------------------------------


def test_backup_backups_and_restore(orders: Path) -> None:
    ok(invoke("record", orders, "PO-1", "--status", "COMPLETED"))
    state = orders.read_bytes()
    folder = Path(ok(invoke("backup", orders)).strip())
    assert folder.parent == Path(f"{orders}.backups")
    assert (folder / "orders.csv.journal").is_file()
    assert (folder / "orders.csv").read_bytes() == state
    listed = ok(invoke("backups", orders)).splitlines()
    assert listed[-1] == str(folder)
    assert listed == sorted(listed)
    data = json.loads(ok(invoke("backups", orders, "--json")))
    assert data == {"csv": str(orders), "backups": listed}

    ok(invoke("record", orders, "PO-2", "--status", "COMPLETED"))
    out = ok(invoke("restore", orders, folder)).splitlines()
    assert out[0] == f"restored {orders} from {folder}"
    safety = Path(out[1].removeprefix("the state before is in "))
    assert safety.is_dir()
    assert statuses(orders, "PO_NUMBER") == {
        "PO-1": "COMPLETED", "PO-2": "PENDING", "PO-3": "PENDING"
    }  # fmt: skip
    assert str(safety) in ok(invoke("backups", orders)).splitlines()
    assert "COMPLETED" in (safety / "orders.csv").read_text().split("PO-2,")[1].split("\n")[0]


def test_backups_says_when_there_are_none(tmp_path: Path) -> None:
    csv = tmp_path / "new jobs.csv"
    csv.write_text("ID,NAME\n1,a\n")
    csvjournal.open(csv, key="ID", keep_backups=0).close()
    result = invoke("backups", csv)
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr == f"no backups of {csv} yet (csvjournal backup '{csv}' makes one)\n"
    assert json.loads(ok(invoke("backups", csv, "--json"))) == {"csv": str(csv), "backups": []}


def test_backup_keep_prunes_the_oldest(orders: Path) -> None:
    made = [Path(ok(invoke("backup", orders, "--keep", "0")).strip()) for _ in range(3)]
    assert len(ok(invoke("backups", orders)).splitlines()) >= 3
    newest = Path(ok(invoke("backup", orders, "--keep", "2")).strip())
    assert ok(invoke("backups", orders)).splitlines() == [str(made[-1]), str(newest)]


def test_restore_refuses_a_folder_that_is_no_backup(orders: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    before = state_of(orders.parent)
    assert_error(invoke("restore", orders, tmp_path / "nowhere"), "no such folder")
    assert_error(invoke("restore", orders, tmp_path / "empty"), "not a csvjournal backup")
    assert state_of(orders.parent) == before


# -- upgrade ---------------------------------------------------------------------------


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_recover_says_that_its_open_upgraded_an_older_schema(tmp_path: Path, as_json: bool) -> None:
    oldest = sorted(FIXTURES.glob("journal-*.sqlite"))[0]
    csv = tmp_path / "orders.csv"
    shutil.copyfile(oldest, f"{csv}.journal")
    before = oldest.stem.removeprefix("journal-")
    head = _migrate.head_revision()
    if as_json:
        data = json.loads(ok(invoke("recover", csv, "--json")))
        assert data["schema_upgraded"] == {"from": before, "to": head}
        assert data["integrity"] == "ok"
    else:
        lines = ok(invoke("recover", csv)).splitlines()
        assert (
            lines[0]
            == f"{csv}.journal: upgraded schema {before} -> {head} (backup in {csv}.backups)"
        )
        assert lines[1] == "integrity check: ok"
    assert ok(invoke("backups", csv)).strip()  # the backup it names
    again = ok(invoke("recover", csv))  # upgraded once: not said again
    assert "upgraded" not in again


@pytest.mark.parametrize("fixture", NOTING, ids=[path.stem for path in NOTING])
@pytest.mark.parametrize(
    "command", [["recover"], ["recover", "--json"], ["run", "--", "true"]], ids=" ".join
)
def test_a_command_refused_for_a_hand_edited_csv_leaves_an_older_schema_as_it_was(
    tmp_path: Path, fixture: Path, command: list[str]
) -> None:
    # Their first open exports nothing, so only a later step would see the edit: the
    # open would have upgraded the schema (and kept a backup for good) by then.
    csv = tmp_path / "orders.csv"
    shutil.copyfile(fixture, f"{csv}.journal")
    csv.write_text("PO_NUMBER,STATUS\nPO-1,EDITED BY HAND\n", encoding="utf-8")
    before = state_of(tmp_path)
    assert_error(invoke(command[0], csv, *command[1:]), "edited by hand", "import --merge")
    after = state_of(tmp_path)
    assert {name: data for name, data in after.items() if not name.endswith(".lock")} == before


def test_upgrade_of_a_current_journal(orders: Path) -> None:
    head = _migrate.head_revision()
    out = ok(invoke("upgrade", orders))
    assert out == f"{orders}.journal: already at schema {head}\n"


def test_upgrade_migrates_an_old_journal_after_a_backup(tmp_path: Path) -> None:
    oldest = sorted(FIXTURES.glob("journal-*.sqlite"))[0]
    csv = tmp_path / "orders.csv"
    shutil.copyfile(oldest, f"{csv}.journal")
    before = oldest.stem.removeprefix("journal-")
    head = _migrate.head_revision()
    assert before != head
    out = ok(invoke("upgrade", csv))
    assert out == (f"{csv}.journal: upgraded schema {before} -> {head} (backup in {csv}.backups)\n")
    assert ok(invoke("backups", csv)).strip()
    assert ok(invoke("upgrade", csv)) == f"{csv}.journal: already at schema {head}\n"


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["status", "--json"],
        ["pending"],
        ["history", "PO-1"],
        ["export", "--to", "c"],
        ["backup"],  # a copy taken before trying a new csvjournal
    ],
    ids=" ".join,
)
def test_a_reading_command_leaves_an_older_journal_as_it_is(
    tmp_path: Path, args: list[str]
) -> None:
    # the job may still run the older csvjournal, which would refuse the upgraded journal
    oldest = sorted(FIXTURES.glob("journal-*.sqlite"))[0]
    revision = oldest.stem.removeprefix("journal-")
    csv = tmp_path / "my orders.csv"
    shutil.copyfile(oldest, f"{csv}.journal")
    before = state_of(tmp_path)
    command, *rest = args
    extra = [tmp_path / arg if arg == "c" else arg for arg in rest]
    upgrade = f"run csvjournal upgrade '{csv}' once"  # quoted: pasted as it is
    assert_error(invoke(command, csv, *extra), f"schema {revision}, older", upgrade)
    assert state_of(tmp_path) == before
    ok(invoke("upgrade", csv))
    ok(invoke(command, csv, *extra))  # once upgraded on purpose


@pytest.mark.parametrize("command", ["upgrade", "status", "pending", "recover"])
def test_a_journal_from_a_newer_csvjournal_is_refused(orders: Path, command: str) -> None:
    conn = sqlite3.connect(f"{orders}.journal")
    conn.execute("UPDATE alembic_version SET version_num = '9999'")
    conn.commit()
    conn.close()
    before = state_of(orders.parent)
    assert_error(invoke(command, orders), "newer")
    assert state_of(orders.parent) == before
