"""The command line, through CliRunner and as the installed console script.

Most tests call the click group in-process (``CliRunner``); a representative subset, every
``--help``, the interrupt tests and the demo run the real console script installed beside
``sys.executable``.
"""

from __future__ import annotations

import csv as csvmod
import dataclasses
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import csvjournal
from csvjournal import _migrate
from csvjournal.cli import cli
from csvjournal.cli._demo import write_sheet
from csvjournal.csvio import temp_prefix
from csvjournal.progress import Progress

CONSOLE_SCRIPT = Path(sys.executable).parent / "csvjournal"
COMMANDS = [
    "backup",
    "backups",
    "demo",
    "export",
    "history",
    "import",
    "init",
    "pending",
    "record",
    "recover",
    "restore",
    "run",
    "status",
    "upgrade",
]
TERMINAL = "COMPLETED,NO_ATTACHMENTS"
FIXTURES = Path(__file__).parent / "fixtures"
SUBPROCESS_TIMEOUT = 120.0


# -- helpers ----------------------------------------------------------------------------


def invoke(*args: object, env: dict[str, str] | None = None) -> Result:
    """Run the command line in-process."""
    return CliRunner().invoke(cli, [str(arg) for arg in args], env=env, prog_name="csvjournal")


def script(*args: object, timeout: float = SUBPROCESS_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run the installed console script."""
    return subprocess.run(
        [str(CONSOLE_SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ok(result: Result) -> str:
    """Assert exit 0 and return stdout."""
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result.stdout


def assert_one_error_line(stderr: str, code: int, *fragments: str, stdout: str = "") -> str:
    """Exit 2, nothing on stdout, exactly one line on stderr: ``csvjournal: error: ...``."""
    assert code == 2, stderr
    assert stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("csvjournal: error: "), stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def assert_error(result: Result, *fragments: str) -> str:
    return assert_one_error_line(result.stderr, result.exit_code, *fragments, stdout=result.stdout)


def state_of(folder: Path) -> dict[str, bytes | None]:
    """Every file in ``folder`` and below (bytes; folders as None), except the exporter's
    lock file: what 'nothing changed' compares."""
    state: dict[str, bytes | None] = {}
    for path in sorted(folder.rglob("*")):
        if path.name in {"exporter.lock", "writer.lock"} or path.name.endswith(("-wal", "-shm")):
            continue
        state[str(path.relative_to(folder))] = path.read_bytes() if path.is_file() else None
    return state


def read_rows(path: Path, delimiter: str = ",") -> list[dict[str, str]]:
    """The CSV on disk, as written (no journal involved)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return list(csvmod.DictReader(handle, delimiter=delimiter))


def statuses(path: Path, key: str = "ID") -> dict[str, str]:
    return {row[key]: row["STATUS"] for row in read_rows(path)}


def events(csv: Path, key: str) -> list[dict[str, object]]:
    data = json.loads(ok(invoke("history", csv, key, "--json")))
    assert data["key"] == key
    return list(data["events"])


def claims(csv: Path, key: str) -> int:
    return sum(1 for event in events(csv, key) if event["status"] == "IN_PROGRESS")


def python_script(path: Path, body: str) -> list[str]:
    """A small Python program for `run` to call: its argv prefix."""
    path.write_text(body, encoding="utf-8")
    return [sys.executable, str(path)]


def wait_for(condition: Callable[[], bool], timeout: float = SUBPROCESS_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def process_gone(pid: int) -> bool:
    """No such process, or only its zombie left (an orphan's zombie awaits its reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}


@pytest.fixture
def orders(tmp_path: Path) -> Path:
    """orders.csv with a journal: three purchase orders, key PO_NUMBER."""
    path = tmp_path / "orders.csv"
    lines = ["PO_NUMBER,SUPPLIER,AMOUNT", "PO-1,ACME,10.00", 'PO-2,"Müller; ""GmbH""",00200']
    path.write_text("\n".join([*lines, "PO-3,Tanaka,3", ""]), encoding="utf-8")
    out = ok(invoke("init", path, "--key", "PO_NUMBER", "--terminal", TERMINAL))
    assert out == f"created {path}.journal: 3 rows, key column PO_NUMBER\n"
    return path


@pytest.fixture
def rows8(tmp_path: Path) -> Path:
    """jobs.csv with a journal: eight rows keyed by ID."""
    path = tmp_path / "jobs.csv"
    path.write_text("ID,NAME\n" + "".join(f"{n},name {n}\n" for n in range(1, 9)))
    ok(invoke("init", path, "--key", "ID"))
    return path


# -- the group: commands, help, version -----------------------------------------------


def test_the_group_has_exactly_the_specified_commands() -> None:
    assert sorted(cli.commands) == COMMANDS
    out = ok(invoke("--help"))
    for command in COMMANDS:
        assert re.search(rf"^\s+{command}\s", out, re.MULTILINE), command


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_help(command: str, flag: str) -> None:
    out = ok(invoke(command, flag))
    assert out.startswith(f"Usage: csvjournal {command} ")
    summary = (cli.commands[command].help or "").split("\n")[0].split(":")[0][:30]
    assert summary
    assert summary in " ".join(out.split())


def test_version() -> None:
    out = ok(invoke("--version"))
    assert out == f"csvjournal, version {csvjournal.__version__}\n"


def start(*args: object) -> subprocess.Popen[str]:
    """Start the installed console script (several at once: each start is slow)."""
    return subprocess.Popen(
        [str(CONSOLE_SCRIPT), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=SUBPROCESS_TIMEOUT)
    finally:
        proc.kill()
    return proc.returncode, out, err


@pytest.mark.slow
def test_every_help_from_the_console_script() -> None:
    procs = {command: start(command, "--help") for command in COMMANDS}
    for command, proc in procs.items():
        code, out, err = finish(proc)
        assert code == 0, (command, err)
        assert err == ""
        assert out.startswith(f"Usage: csvjournal {command} ")
        assert "--help" in out


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["history"], "Missing argument 'CSV'"),
        (["history", "x.csv"], "Missing argument 'KEY'"),
        (["status", "x.csv", "--bogus"], "No such option '--bogus'"),
        (["--bogus"], "No such option '--bogus'"),
        (["frobnicate"], "No such command 'frobnicate'"),
        (["run", "x.csv", "--workers", "0", "--", "true"], "--workers"),
        (["backup", "x.csv", "--keep", "-1"], "--keep"),
        (["status", "x.csv", "--interval", "0"], "--interval"),
        (["import", "x.csv"], "Missing option '--merge'"),
        (["run", "x.csv"], "Missing argument 'COMMAND...'"),
    ],
)
def test_usage_errors_are_one_line_too(tmp_path: Path, args: list[str], fragment: str) -> None:
    before = state_of(tmp_path)
    result = invoke(*args)
    line = assert_error(result, fragment)
    assert "--help" in line
    assert state_of(tmp_path) == before


def test_debug_shows_the_exception_instead_of_one_line(tmp_path: Path) -> None:
    csv = tmp_path / "x.csv"
    Path(f"{csv}.journal").write_bytes(b"not a database " * 100)
    assert_error(invoke("status", csv), "not a csvjournal journal")
    result = invoke("--debug", "status", csv)
    assert isinstance(result.exception, csvjournal.SettingsError)
    assert "csvjournal: error:" not in result.stderr


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


def test_init_twice_is_refused_and_changes_nothing(orders: Path) -> None:
    before = state_of(orders.parent)
    assert_error(invoke("init", orders, "--key", "PO_NUMBER"), "already exists")
    assert state_of(orders.parent) == before


@pytest.mark.parametrize(
    ("content", "args", "fragments"),
    [
        ("ID,NAME\n1,a\n", ["--key", "NOPE"], ["NOPE"]),
        ("ID,NAME\n1,a\n2,b\n1,c\n", ["--key", "ID"], ["duplicate", "line 4"]),
        ("ID,NAME\n1,a\n,b\n", ["--key", "ID"], ["empty", "line 3"]),
        ('ID,NAME\n1,"open\n', ["--key", "ID"], ["quote"]),
        ("ID,NAME\n1,a,extra\n", ["--key", "ID"], ["line 2"]),
        ("ID,NAME\n1,a\n", ["--key", "ID", "--terminal", " , "], ["--terminal"]),
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


# -- status ----------------------------------------------------------------------------


def test_status_shows_counts_percent_rate_and_freshness(orders: Path) -> None:
    out = ok(invoke("status", orders))
    assert "PENDING" in out
    assert "0 of 3 rows done (0.0 %), 3 pending, 0 in progress" in out
    assert "rate: no rows finished in the last minute; ETA: unknown" in out
    assert "exporter: none running; CSV: current" in out
    ok(invoke("record", orders, "PO-1", "--status", "COMPLETED"))
    ok(invoke("record", orders, "PO-2", "--status", "FAILED"))
    out = ok(invoke("status", orders))
    assert re.search(r"COMPLETED \(done\)\s*│\s*1", out), out
    assert re.search(r"FAILED\s*│\s*1", out), out
    assert "1 of 3 rows done (33.3 %), 2 pending, 0 in progress" in out
    assert "rows/s" in out


def test_status_json_has_the_progress_fields(orders: Path) -> None:
    data = json.loads(ok(invoke("status", orders, "--json")))
    assert set(data) == {"csv"} | {field.name for field in dataclasses.fields(Progress)}
    assert data["csv"] == str(orders)
    assert data["rows"] == 3
    assert data["counts"] == {"PENDING": 3}
    assert (data["done"], data["pending"], data["in_progress"]) == (0, 3, 0)
    assert data["percent_done"] == 0.0
    assert data["rate"] is None
    assert data["eta_seconds"] is None
    assert data["csv_current"] is True
    assert data["exporter_alive"] is False
    ok(invoke("record", orders, "PO-1", "--status", "COMPLETED"))
    ok(invoke("record", orders, "PO-2", "--status", "NO_ATTACHMENTS"))
    with csvjournal.open(orders, export=False) as journal:
        assert journal.claim(1, lease=60, worker="w") == ["PO-3"]
        data = json.loads(ok(invoke("status", orders, "--json")))
        assert "CSV: 1 events behind" in ok(invoke("status", orders))
    assert data["counts"] == {"COMPLETED": 1, "IN_PROGRESS": 1, "NO_ATTACHMENTS": 1}
    assert (data["done"], data["pending"], data["in_progress"]) == (2, 0, 1)
    assert data["percent_done"] == 66.67
    assert data["rate"] > 0
    assert data["eta_seconds"] >= 0
    assert (data["last_seq"], data["exported_seq"]) == (3, 2)  # the claim is not exported yet
    assert data["csv_current"] is False


def test_status_watch_returns_once_the_job_is_done(orders: Path) -> None:
    for key in ["PO-1", "PO-2", "PO-3"]:
        ok(invoke("record", orders, key, "--status", "COMPLETED"))
    out = ok(invoke("status", orders, "--watch", "--interval", "0.1"))
    assert "3 of 3 rows done (100.0 %)" in out


def has_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open (Linux)."""
    try:
        links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
    except (FileNotFoundError, PermissionError):
        return False
    return str(path.resolve()) in links


@pytest.mark.slow
def test_status_watch_follows_the_job_until_it_is_done(orders: Path) -> None:
    proc = start("status", orders, "--watch", "--interval", "0.1")
    try:
        wait_for(lambda: has_open(proc.pid, Path(f"{orders}.journal")) or proc.poll() is not None)
        with csvjournal.open(orders, export=False) as journal:
            for key in ["PO-1", "PO-2"]:
                journal.record(key, "COMPLETED")
            time.sleep(0.5)
            assert proc.poll() is None  # 2 of 3 done: still watching
            journal.record("PO-3", "NO_ATTACHMENTS")
    finally:
        code, out, err = finish(proc)
    assert code == 0, err
    assert "3 of 3 rows done (100.0 %)" in out


# -- pending ---------------------------------------------------------------------------


def test_pending_lists_rows_neither_terminal_nor_leased(orders: Path) -> None:
    assert ok(invoke("pending", orders)) == "PO-1\nPO-2\nPO-3\n"
    ok(invoke("record", orders, "PO-2", "--status", "NO_ATTACHMENTS"))
    ok(invoke("record", orders, "PO-3", "--status", "FAILED"))
    assert ok(invoke("pending", orders)) == "PO-1\nPO-3\n"
    with csvjournal.open(orders, export=False) as journal:
        journal.claim(1, lease=60, worker="w")
        data = json.loads(ok(invoke("pending", orders, "--json")))
    assert data == {"csv": str(orders), "count": 1, "pending": ["PO-3"]}


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
    assert ok(invoke("history", orders, "PO-3")) == ""


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
    assert ok(invoke("export", orders)) == f"wrote {orders}\n"
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


def test_backup_keep_prunes_the_oldest(orders: Path) -> None:
    made = [Path(ok(invoke("backup", orders, "--keep", "0")).strip()) for _ in range(3)]
    assert len(ok(invoke("backups", orders)).splitlines()) >= 3
    newest = Path(ok(invoke("backup", orders, "--keep", "2")).strip())
    assert ok(invoke("backups", orders)).splitlines() == [str(made[-1]), str(newest)]


def test_restore_refuses_a_folder_that_is_no_backup(orders: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    before = state_of(orders.parent)
    assert_error(invoke("restore", orders, tmp_path / "nowhere"), "not a csvjournal backup")
    assert_error(invoke("restore", orders, tmp_path / "empty"), "not a csvjournal backup")
    assert state_of(orders.parent) == before


# -- upgrade ---------------------------------------------------------------------------


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


@pytest.mark.parametrize("command", ["upgrade", "status", "pending", "recover"])
def test_a_journal_from_a_newer_csvjournal_is_refused(orders: Path, command: str) -> None:
    conn = sqlite3.connect(f"{orders}.journal")
    conn.execute("UPDATE alembic_version SET version_num = '9999'")
    conn.commit()
    conn.close()
    before = state_of(orders.parent)
    assert_error(invoke(command, orders), "newer")
    assert state_of(orders.parent) == before


# -- bad input for every command -----------------------------------------------------------

ON_A_JOURNAL: dict[str, list[str]] = {
    "status": ["--json"],
    "pending": [],
    "record": ["1", "--status", "COMPLETED"],
    "history": ["1"],
    "export": [],
    "import": ["--merge"],
    "recover": [],
    "backup": [],
    "backups": [],
    "upgrade": [],
    "run": ["--", sys.executable, "-c", "pass"],
}


@pytest.mark.parametrize("command", sorted(ON_A_JOURNAL))
@pytest.mark.parametrize("csv_exists", [False, True], ids=["no-csv", "bare-csv"])
def test_a_csv_without_a_journal_is_refused(tmp_path: Path, command: str, csv_exists: bool) -> None:
    csv = tmp_path / "plain.csv"
    if csv_exists:
        csv.write_text("ID,NAME\n1,a\n")
    before = state_of(tmp_path)
    line = assert_error(invoke(command, csv, *ON_A_JOURNAL[command]), f"no journal for {csv}")
    assert f"run csvjournal init {csv}" in line
    assert state_of(tmp_path) == before


@pytest.mark.parametrize("command", sorted(set(ON_A_JOURNAL) - {"backups"}))
def test_a_file_that_is_no_journal_is_refused(tmp_path: Path, command: str) -> None:
    csv = tmp_path / "plain.csv"
    csv.write_text("ID,NAME\n1,a\n")
    Path(f"{csv}.journal").write_bytes(b"garbage " * 500)
    before = state_of(tmp_path)
    assert_error(invoke(command, csv, *ON_A_JOURNAL[command]), f"{csv}.journal")
    assert state_of(tmp_path) == before


def test_another_sqlite_database_is_no_journal(tmp_path: Path) -> None:
    csv = tmp_path / "plain.csv"
    conn = sqlite3.connect(f"{csv}.journal")
    conn.execute("CREATE TABLE something (x)")
    conn.commit()
    conn.close()
    before = state_of(tmp_path)
    assert_error(invoke("status", csv), "not a csvjournal journal")
    assert_error(invoke("run", csv, "--", "true"), "not a csvjournal journal")
    assert state_of(tmp_path) == before


def test_init_of_a_missing_csv_is_an_error(tmp_path: Path) -> None:
    assert_error(invoke("init", tmp_path / "nope.csv", "--key", "ID"), "no such file")
    assert list(tmp_path.iterdir()) == []


def test_demo_into_a_file_is_an_error(tmp_path: Path) -> None:
    target = tmp_path / "a-file"
    target.write_text("x")
    assert_error(invoke("demo", target), "a-file")
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]


# -- log output ------------------------------------------------------------------------


def _json_lines(stderr: str) -> list[dict[str, object]]:
    found = [json.loads(line) for line in stderr.splitlines()]
    for entry in found:
        assert {"event", "level", "timestamp"} <= set(entry), entry
    return found


def test_log_json_makes_stderr_json_lines(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("ID\n1\n2\n")
    result = invoke("--log-json", "init", csv, "--key", "ID")
    ok(result)
    assert "journal_created" in [entry["event"] for entry in _json_lines(result.stderr)]
    result = invoke("--log-json", "run", csv, "--max-attempts", "1", "--", "false")
    assert result.exit_code == 1, result.stderr
    logged = _json_lines(result.stderr)  # no progress bar among them
    failed = [entry for entry in logged if entry["event"] == "run_row_failed"]
    assert sorted(str(entry["key"]) for entry in failed) == ["1", "2"]
    assert all(entry["level"] == "info" for entry in failed)


def test_plain_logs_show_warnings_only(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("ID\n1\n")
    result = invoke("init", csv, "--key", "ID")
    ok(result)
    assert result.stderr == ""


# -- run -------------------------------------------------------------------------------


def _summary(succeeded: int, exhausted: int, failed: int, given_back: int, csv: Path) -> str:
    return (
        f"{succeeded} succeeded, {exhausted} failed after their last attempt"
        f" ({failed} failed attempts), {given_back} given back; CSV: {csv}"
    )


def test_run_records_success_and_failure(rows8: Path, tmp_path: Path) -> None:
    calls = tmp_path / "calls.log"
    command = python_script(
        tmp_path / "cmd.py",
        "import sys\n"
        "key = sys.argv[1]\n"
        f"open({str(calls)!r}, 'a').write(key + '\\n')\n"
        "if int(key) % 3 == 0:\n"
        "    sys.stderr.write('warming up\\n   no such order: ' + key + '   \\n\\n  \\n')\n"
        "    sys.exit(int(key))\n",
    )
    result = invoke("run", rows8, "--workers", "3", "--max-attempts", "2", "--", *command, "{ID}")
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stdout == _summary(6, 2, 4, 0, rows8) + "\n"
    rows = {row["ID"]: row for row in read_rows(rows8)}  # the CSV is current at exit
    for key, row in rows.items():
        if int(key) % 3 == 0:
            assert row["STATUS"] == "FAILED"
            assert row["ERROR_MESSAGE"] == f"no such order: {key}"
            assert row["EXIT_CODE"] == key
            assert claims(rows8, key) == 2
            assert [e["status"] for e in events(rows8, key)] == ["IN_PROGRESS", "FAILED"] * 2
        else:
            assert row["STATUS"] == "COMPLETED"
            assert row["ERROR_MESSAGE"] == ""
            assert row["EXIT_CODE"] == "0"
            assert claims(rows8, key) == 1
    assert sorted(calls.read_text().split(), key=int) == [
        "1", "2", "3", "3", "4", "5", "6", "6", "7", "8"
    ]  # fmt: skip
    assert ok(invoke("pending", rows8)).split() == ["3", "6"]


def test_run_exits_0_when_every_row_is_done(rows8: Path) -> None:
    result = invoke("run", rows8, "-j", "4", "--", sys.executable, "-c", "pass")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == _summary(8, 0, 0, 0, rows8) + "\n"
    assert set(statuses(rows8).values()) == {"COMPLETED"}
    again = invoke("run", rows8, "--", sys.executable, "-c", "raise SystemExit(1)")
    assert again.exit_code == 0  # nothing left to do: nothing runs
    assert again.stdout == _summary(0, 0, 0, 0, rows8) + "\n"


def test_run_kills_a_command_past_its_timeout(tmp_path: Path) -> None:
    csv = tmp_path / "hang.csv"
    csv.write_text("ID\nfast\nslow\n")
    pids = tmp_path / "pids"
    command = python_script(
        tmp_path / "hang.py",
        "import os, subprocess, sys, time\n"
        "if sys.argv[1] == 'fast':\n"
        "    sys.exit(0)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "time.sleep(600)\n",
    )
    result = invoke(
        "run", csv, "--key", "ID", "--timeout", "1.5", "--max-attempts", "1", "--",
        *command, "{ID}",
    )  # fmt: skip
    assert result.exit_code == 1, result.stderr
    rows = {row["ID"]: row for row in read_rows(csv)}
    assert rows["fast"]["STATUS"] == "COMPLETED"
    assert rows["slow"]["STATUS"] == "FAILED"
    assert "timed out" in rows["slow"]["ERROR_MESSAGE"]
    assert "1.5 s" in rows["slow"]["ERROR_MESSAGE"]
    assert rows["slow"]["EXIT_CODE"] != "0"
    for pid in map(int, pids.read_text().split()):  # the command and its own child
        wait_for(lambda pid=pid: process_gone(pid), timeout=30)


WEIRD_VALUES = [
    "two words",
    "single ' and double \" quotes",
    "a; touch pwned-semicolon; b",
    "$(touch pwned-dollar)",
    "`touch pwned-backtick`",
    "| touch pwned-pipe && touch pwned-and",
    "$HOME ${PATH} * ~ ?",
    "  padded  ",
    "",
    "-n",
    "line one\nline two",
    "{ID} {{x}}",
    "Tanaka 田中 Trading",
    "back\\slash",
]


def test_run_passes_values_literally_as_single_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    csv = tmp_path / "weird.csv"
    with csv.open("w", newline="", encoding="utf-8") as handle:
        writer = csvmod.writer(handle, lineterminator="\n")
        writer.writerow(["ID", "VALUE"])
        writer.writerows([str(n), value] for n, value in enumerate(WEIRD_VALUES))
    ok(invoke("init", csv, "--key", "ID"))
    out = tmp_path / "argv"
    out.mkdir()
    command = python_script(
        tmp_path / "argv.py",
        "import json, sys\n"
        f"open({str(out)!r} + '/' + sys.argv[1] + '.json', 'w').write(json.dumps(sys.argv[1:]))\n",
    )
    result = invoke("run", csv, "--", *command, "{ID}", "{VALUE}", "--value={VALUE}")
    assert result.exit_code == 0, result.stderr
    for n, value in enumerate(WEIRD_VALUES):
        argv = json.loads((out / f"{n}.json").read_text())
        assert argv == [str(n), value, f"--value={value}"]
    assert not list(tmp_path.rglob("pwned*"))


def test_run_puts_every_column_in_the_environment(tmp_path: Path) -> None:
    csv = tmp_path / "env.csv"
    csv.write_bytes(
        "po number;supplier name;Größe;l1-uu;x.y\nPO 1;ACME; XL ;$(id);\n".encode("utf-8-sig")
    )
    ok(invoke("init", csv, "--key", "po number"))
    out = tmp_path / "env.json"
    command = python_script(
        tmp_path / "env.py",
        "import json, os\n"
        "env = {k: v for k, v in os.environ.items() if k.startswith(('CSVJ_', 'OUTER_'))}\n"
        f"open({str(out)!r}, 'w').write(json.dumps(env))\n",
    )
    result = invoke("run", csv, "--", *command, env={"OUTER_SETTING": "kept"})
    assert result.exit_code == 0, result.stderr
    env = json.loads(out.read_text())
    stamp = env.pop("CSVJ_LAST_PROCESSED")
    assert env == {
        "CSVJ_PO_NUMBER": "PO 1",
        "CSVJ_SUPPLIER_NAME": "ACME",
        "CSVJ_GR_SSE": " XL ",
        "CSVJ_L1_UU": "$(id)",
        "CSVJ_X_Y": "",
        "CSVJ_STATUS": "IN_PROGRESS",
        "OUTER_SETTING": "kept",
    }
    assert stamp.endswith("Z")


def test_run_success_status(rows8: Path, tmp_path: Path) -> None:
    calls = tmp_path / "calls.log"
    command = python_script(
        tmp_path / "cmd.py", f"import sys\nopen({str(calls)!r}, 'a').write(sys.argv[1] + '\\n')\n"
    )
    before = state_of(tmp_path)
    refused = invoke("run", rows8, "--success-status", "DOWNLOADED", "--", *command, "{ID}")
    assert_error(refused, "--success-status DOWNLOADED", "--terminal COMPLETED,DOWNLOADED")
    assert state_of(tmp_path) == before  # not even a backup
    result = invoke(
        "run", rows8, "--success-status", "DOWNLOADED", "--terminal", "COMPLETED,DOWNLOADED",
        "--", *command, "{ID}",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert set(statuses(rows8).values()) == {"DOWNLOADED"}
    assert sorted(calls.read_text().split(), key=int) == [str(n) for n in range(1, 9)]


def test_run_retry_failed_gives_exhausted_rows_new_attempts(rows8: Path, tmp_path: Path) -> None:
    calls, fixed = tmp_path / "calls.log", tmp_path / "fixed"
    command = python_script(
        tmp_path / "cmd.py",
        "import os, sys\n"
        f"open({str(calls)!r}, 'a').write(sys.argv[1] + '\\n')\n"
        f"if sys.argv[1] in ('2', '5') and not os.path.exists({str(fixed)!r}):\n"
        "    sys.exit('not yet')\n",
    )
    first = invoke("run", rows8, "--max-attempts", "1", "--", *command, "{ID}")
    assert first.exit_code == 1
    assert {k: v for k, v in statuses(rows8).items() if v != "COMPLETED"} == {
        "2": "FAILED", "5": "FAILED"
    }  # fmt: skip
    assert read_rows(rows8)[1]["ERROR_MESSAGE"] == "not yet"
    fixed.touch()
    calls.write_text("")
    second = invoke("run", rows8, "--max-attempts", "1", "--", *command, "{ID}")
    assert second.exit_code == 1  # their attempts are used up: nothing ran
    assert calls.read_text() == ""
    third = invoke("run", rows8, "--max-attempts", "1", "--retry-failed", "--", *command, "{ID}")
    assert third.exit_code == 0, third.stderr
    assert third.stdout == _summary(2, 0, 0, 0, rows8) + "\n"
    assert sorted(calls.read_text().split()) == ["2", "5"]
    assert set(statuses(rows8).values()) == {"COMPLETED"}
    assert [e["status"] for e in events(rows8, "2")] == [
        "IN_PROGRESS", "FAILED", "IN_PROGRESS", "COMPLETED"
    ]  # fmt: skip


def test_run_show_output_lets_stdout_through(
    rows8: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    code = "import sys; print('out-of-' + sys.argv[1])"
    quiet = invoke(
        "run", rows8, "-j", "1", "--max-attempts", "1", "--", sys.executable, "-c", code, "{ID}"
    )
    assert quiet.exit_code == 0
    assert "out-of-" not in capfd.readouterr().out + quiet.stdout
    ok(invoke("record", rows8, "1", "--status", "AGAIN"))
    shown = invoke("run", rows8, "--show-output", "--", sys.executable, "-c", code, "{ID}")
    assert shown.exit_code == 0
    assert "out-of-1" in capfd.readouterr().out
    assert shown.stdout == _summary(1, 0, 0, 0, rows8) + "\n"


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["echo", "{NOPE}"], "placeholder {NOPE}"),
        (["echo", "--name={name}"], "placeholder {name}"),  # names are case-sensitive
    ],
)
@pytest.mark.parametrize("journal", [True, False], ids=["journal", "with-key"])
def test_run_refuses_an_unknown_placeholder_and_changes_nothing(
    tmp_path: Path, argv: list[str], fragment: str, journal: bool
) -> None:
    csv = tmp_path / "jobs.csv"
    csv.write_text("ID,NAME\n1,a\n")
    if journal:
        ok(invoke("init", csv, "--key", "ID"))
    before = state_of(tmp_path)
    result = invoke("run", csv, *([] if journal else ["--key", "ID"]), "--", *argv)
    line = assert_error(result, fragment)
    assert "ID, NAME, STATUS, LAST_PROCESSED" in line
    assert state_of(tmp_path) == before


def test_run_with_key_creates_the_journal(tmp_path: Path) -> None:
    csv = tmp_path / "new.csv"
    csv.write_text("ID;CITY\n1;Zürich\n2;Oslo\n")
    result = invoke(
        "run", csv, "--key", "ID", "--terminal", "COMPLETED", "--max-attempts", "1", "--",
        sys.executable, "-c", "import sys; sys.exit(sys.argv[1] == 'Oslo')", "{CITY}",
    )  # fmt: skip
    assert result.exit_code == 1
    assert Path(f"{csv}.journal").exists()
    assert csv.read_text(encoding="utf-8").splitlines()[0].startswith("ID;CITY;STATUS;")
    rows = {row["ID"]: row for row in read_rows(csv, ";")}
    assert rows["1"]["STATUS"] == "COMPLETED"
    assert rows["2"]["STATUS"] == "FAILED"
    assert rows["2"]["EXIT_CODE"] == "1"


JOB = """\
import os, sys, time
from pathlib import Path
key, folder = sys.argv[1], Path(sys.argv[2])
with open(folder / "calls.log", "a") as log:
    log.write(f"start {key} {os.getpid()}\\n")
if int(key) > 4:
    deadline = time.time() + 600
    while not (folder / "release").exists() and time.time() < deadline:
        time.sleep(0.05)
with open(folder / "calls.log", "a") as log:
    log.write(f"end {key}\\n")
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signals", "grace", "release"),
    [
        (["SIGINT"], 1.0, False),  # the hung commands are killed, their rows given back
        (["SIGINT"], 300.0, True),  # the running commands finish within the grace period
        (["SIGTERM", "SIGINT"], 300.0, False),  # a second signal kills at once
    ],
    ids=["sigint-kill", "sigint-grace", "second-signal"],
)
def test_run_stops_on_a_signal_and_resumes(
    rows8: Path, tmp_path: Path, signals: list[str], grace: float, release: bool
) -> None:
    job = tmp_path / "job.py"
    job.write_text(JOB)
    log = tmp_path / "calls.log"
    err_path = tmp_path / "run.err"
    argv = [
        str(CONSOLE_SCRIPT), "--log-json", "run", str(rows8), "--workers", "2",
        "--grace", str(grace), "--", sys.executable, str(job), "{ID}", str(tmp_path),
    ]  # fmt: skip
    with err_path.open("w") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True)
        try:

            def started() -> list[str]:
                return log.read_text().splitlines() if log.exists() else []

            wait_for(lambda: {"start 5", "start 6"} <= {" ".join(s.split()[:2]) for s in started()})
            wait_for(lambda: {f"end {n}" for n in range(1, 5)} <= set(started()))
            hung = [
                int(s.split()[2])
                for s in started()
                if s.split()[:2] in (["start", "5"], ["start", "6"])
            ]
            for number, name in enumerate(signals):
                proc.send_signal(getattr(signal, name))
                if number == 0:  # the run noticed: it claims nothing more from here on
                    wait_for(lambda: "run_stopping" in err_path.read_text())
            if release:
                (tmp_path / "release").touch()
            out, _ = proc.communicate(timeout=SUBPROCESS_TIMEOUT)
        finally:
            proc.kill()
            proc.wait()
    stderr = err_path.read_text()
    assert proc.returncode == 130, stderr
    logged = _json_lines(stderr)
    assert "run_stopping" in [entry["event"] for entry in logged]
    first_run = started()
    assert not any(line.split()[1] in {"7", "8"} for line in first_run)  # no claim after the stop
    after = statuses(rows8)  # the CSV, exported at exit
    finished = {"1", "2", "3", "4", "5", "6"} if release else {"1", "2", "3", "4"}
    assert after == {str(n): "COMPLETED" if str(n) in finished else "PENDING" for n in range(1, 9)}
    given_back = 0 if release else 2
    assert out.strip() == _summary(len(finished), 0, 0, given_back, rows8)
    for pid in hung:
        wait_for(lambda pid=pid: process_gone(pid), timeout=30)
    if not release:
        last = events(rows8, "5")[-1]
        assert last["status"] == "PENDING"
        assert "released" in str(last["note"])

    (tmp_path / "release").touch()
    resumed = invoke(
        "run", rows8, "--workers", "2", "--", sys.executable, str(job), "{ID}", tmp_path
    )
    assert resumed.exit_code == 0, resumed.stderr
    second_run = [
        line.split()[1] for line in started()[len(first_run) :] if line.startswith("start")
    ]
    assert sorted(second_run) == sorted(set(map(str, range(1, 9))) - finished)  # each once
    assert set(statuses(rows8).values()) == {"COMPLETED"}
    for key in finished:
        assert claims(rows8, key) == 1  # never run again once terminal


# -- the console script ------------------------------------------------------------------


@pytest.mark.slow
def test_the_console_script_end_to_end(tmp_path: Path) -> None:
    csv = tmp_path / "orders.csv"
    csv.write_text("PO_NUMBER;SUPPLIER\nPO-1;ACME\nPO-2;Tanaka\n", encoding="utf-8")
    code, out, err = finish(start("init", csv, "--key", "PO_NUMBER"))
    assert code == 0, err
    assert out == f"created {csv}.journal: 2 rows, key column PO_NUMBER\n"
    with csvjournal.open(csv) as journal:  # this process exports: the others see it
        status = start("status", csv, "--json")
        record = start("record", csv, "PO-2", "--status", "COMPLETED", "NOTE=via the script")
        unknown = start("history", csv, "PO-404")
        missing = start("pending", tmp_path / "nope.csv")
        version = start("--version")
        code, out, err = finish(status)
        assert code == 0, err
        data = json.loads(out)
        assert data["exporter_alive"] is True
        assert data["rows"] == 2
        code, out, err = finish(record)
        assert code == 0, err
        assert re.fullmatch(r"recorded #\d+\n", out)
        assert journal.get("PO-2")["NOTE"] == "via the script"  # type: ignore[index]
    assert read_rows(csv, ";")[1]["NOTE"] == "via the script"  # flushed by our exporter
    code, out, err = finish(unknown)
    assert_one_error_line(err, code, "no row with key 'PO-404'", stdout=out)
    code, out, err = finish(missing)
    assert_one_error_line(err, code, f"no journal for {tmp_path / 'nope.csv'}", stdout=out)
    code, out, err = finish(version)
    assert (code, out, err) == (0, f"csvjournal, version {csvjournal.__version__}\n", "")


# -- demo ------------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_runs_a_whole_job_and_replaces_an_earlier_demo(tmp_path: Path) -> None:
    # An earlier demo's files in the folder (built quickly here rather than by a second
    # 20-40 s demo): its journal, events, backups, a temp file; and a file of the user's.
    folder = tmp_path / "demo"
    folder.mkdir()
    csv = folder / "orders.csv"
    write_sheet(csv, rows=40)
    with csvjournal.open(csv, key="PO_NUMBER", terminal={"COMPLETED", "NO_ATTACHMENTS"}) as old:
        for n in range(1, 41):
            old.record(f"PO-2026-{n:05d}", "COMPLETED", NOTE="earlier demo")
        old_backups = {old.backup(), *old.backups()}
    temp = folder / f"{temp_prefix(csv)}leftover"
    temp.write_text("half")
    (folder / "notes.txt").write_text("mine")
    started = time.time()

    done = script("--log-json", "demo", folder)
    assert done.returncode == 0, done.stderr
    assert _json_lines(done.stderr)  # the worker processes log JSON lines too
    out = done.stdout
    assert f"1. wrote {csv}: 2,500 purchase orders" in out
    assert "kill -9 of worker demo-2" in out
    assert "4. recover(): integrity check: ok" in out
    assert re.search(r"COMPLETED\s*│\s*[\d,]+", out)
    assert re.search(r"NO_ATTACHMENTS\s*│\s*[\d,]+", out)
    assert re.search(r"FAILED\s*│\s*2[5-9]", out)
    assert "history of PO-2026-00097:" in out
    assert re.search(r"#\d+ \d\d:\d\d:\d\d\.\d{3} demo-\d: FAILED .*not found in the ERP", out)
    assert f"The status sheet: {csv}" in out

    data = csv.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    header = data[3:].split(b"\r\n")[0].decode()
    assert header.split(";")[:3] == ["PO_NUMBER", "STATUS", "SUPPLIER"]
    assert "NOTE" not in header
    rows = read_rows(csv, ";")
    assert [row["PO_NUMBER"] for row in rows] == [f"PO-2026-{n:05d}" for n in range(1, 2501)]
    for row in rows:
        if int(row["PO_NUMBER"].rsplit("-", 1)[1]) % 97 == 0:
            assert row["STATUS"] == "FAILED"
            assert "not found in the ERP" in row["ERROR_MESSAGE"]
        elif row["STATUS"] == "FAILED":  # a rare row whose three tries all timed out
            assert "timed out" in row["ERROR_MESSAGE"]
        else:
            assert row["STATUS"] in {"COMPLETED", "NO_ATTACHMENTS"}

    # afresh: nothing of the earlier demo is left but the user's own file
    assert not temp.exists()
    assert (folder / "notes.txt").read_text() == "mine"
    assert not old_backups & set(Path(f"{csv}.backups").iterdir())
    with csvjournal.open(csv, export=False) as journal:
        assert journal.settings.terminal == {"COMPLETED", "NO_ATTACHMENTS"}
        for key in ["PO-2026-00001", "PO-2026-00040", "PO-2026-00097"]:
            history = journal.history(key)
            assert history
            assert all(event.at.timestamp() >= started for event in history)
        failed = [row["PO_NUMBER"] for row in rows if row["STATUS"] == "FAILED"]
        assert journal.pending() == failed
    assert len(failed) >= 25


@pytest.mark.slow
def test_the_backup_and_repair_commands_from_the_console_script(tmp_path: Path) -> None:
    csv = tmp_path / "orders.csv"
    csv.write_text("ID,NOTE\na,x\nb,y\n", encoding="utf-8")
    assert script("init", csv, "--key", "ID").returncode == 0
    done = script("backup", csv)
    assert done.returncode == 0, done.stderr
    first = Path(done.stdout.strip())
    assert first.is_dir()
    listed = json.loads(script("backups", csv, "--json").stdout)
    assert listed["csv"] == str(csv)
    assert len(listed["backups"]) == 2  # init's session backup, then this one
    assert listed["backups"][-1] == str(first)
    assert script("record", csv, "a", "--status", "COMPLETED").returncode == 0
    copy = tmp_path / "copy.csv"
    done = script("export", csv, "--to", copy)
    assert (done.returncode, done.stdout) == (0, f"wrote {copy}\n"), done.stderr
    assert read_rows(copy, ",")[0]["STATUS"] == "COMPLETED"
    csv.write_text(csv.read_text(encoding="utf-8") + "c,new,,\n", encoding="utf-8")  # by hand
    done = script("import", csv, "--merge")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"merged {csv}: 1 added, 0 updated")
    done = script("restore", csv, first)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"restored {csv} from {first}")
    assert [row["STATUS"] for row in read_rows(csv, ",")] == ["PENDING", "PENDING"]
    done = script("upgrade", csv)
    assert (done.returncode, done.stderr) == (0, "")
    assert "already at schema" in done.stdout
    done = script("restore", csv, tmp_path / "no-such-backup")
    assert_one_error_line(done.stderr, done.returncode, "no-such-backup", stdout=done.stdout)
