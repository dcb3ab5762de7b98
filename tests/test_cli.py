"""The command group: commands, help, version, usage errors, --debug, logs, no journal."""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import click
import pytest
from _cli import _json_lines, assert_error, finish, invoke, ok, start, state_of, statuses
from click.testing import Result

import csvjournal
from csvjournal.cli import cli
from csvjournal.cli._app import CliError
from csvjournal.cli._demo import _mark as mark_as_demo
from csvjournal.cli._demo import _prepare as prepare_demo
from csvjournal.cli._demo import write_sheet

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
        # click kept the last value: record B, key by ID
        (
            ["record", "x.csv", "1", "--status", "A", "--status=B"],
            "--status given twice (--status A and --status=B)",
        ),
        (
            ["init", "x.csv", "--key", "N", "--key", "ID"],
            "--key given twice (--key N and --key ID)",
        ),
        (["run", "x.csv", "-j", "2", "-j3", "--", "true"], "--workers given twice (-j 2 and -j3)"),
        (
            ["record", "x.csv", "1", "--status", "a b", "--status", ""],
            "(--status 'a b' and --status '')",
        ),
    ],
)
def test_usage_errors_are_one_line_too(tmp_path: Path, args: list[str], fragment: str) -> None:
    before = state_of(tmp_path)
    result = invoke(*args)
    line = assert_error(result, fragment)
    assert "--help" in line
    assert state_of(tmp_path) == before


def test_a_value_that_looks_like_an_option_is_no_second_option(tmp_path: Path) -> None:
    # the check for an option given twice took these values for the option itself
    csv = tmp_path / "o.csv"
    csv.write_text("ID\nA\nB\n")
    ok(invoke("init", csv, "--key", "ID"))
    ok(invoke("record", csv, "A", "--status", "--status"))
    ok(invoke("record", csv, "B", "--status=-j", "NOTE=--status"))
    assert statuses(csv, "ID") == {"A": "--status", "B": "-j"}
    words = ["-j", "1", "--terminal", "-jX,--status,COMPLETED", "--", "true", "-j", "2"]
    result = invoke("run", csv, *words)
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize(
    ("args", "help_of"),
    [
        (["init", "x.csv", "--key"], "csvjournal init"),
        (["run", "x.csv", "-j"], "csvjournal run"),
        (["status", "x.csv", "--interval"], "csvjournal status"),
        (["--bogus"], "csvjournal"),
        (["status", "x.csv", "--bogus"], "csvjournal status"),
    ],
)
def test_a_usage_error_points_to_the_help_that_lists_the_option(
    args: list[str], help_of: str
) -> None:
    # an option without its value pointed to `csvjournal --help`, which does not list it
    assert assert_error(invoke(*args), "").endswith(f"(see {help_of} --help)")


@pytest.mark.parametrize("thing", ["folder", "text file"])
def test_a_journal_path_that_is_no_journal_is_named_as_such(tmp_path: Path, thing: str) -> None:
    # init said "already exists: the journal is there"; status, "disk I/O error"
    csv = tmp_path / "o.csv"
    csv.write_text("ID\n1\n")
    journal = tmp_path / "o.csv.journal"
    if thing == "folder":
        journal.mkdir()
    else:
        journal.write_text("hello\n")
    before = state_of(tmp_path)
    said = "a folder, not a journal" if thing == "folder" else "cannot be read as a csvjournal"
    assert_error(invoke("init", csv, "--key", "ID"), said)
    if thing == "folder":
        assert_error(invoke("status", csv), f"{journal}: a folder, not a journal")
    assert state_of(tmp_path) == before


def _traceback_then_the_line(result: Result) -> None:
    assert result.exit_code == 2, result.stderr
    assert "Traceback" in result.stderr
    assert "csvjournal.errors.SettingsError" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("csvjournal: error: ")


def test_debug_shows_the_traceback_before_the_line(tmp_path: Path) -> None:
    csv = tmp_path / "x.csv"
    Path(f"{csv}.journal").write_bytes(b"not a database " * 100)
    assert_error(invoke("status", csv), "not a csvjournal journal")
    _traceback_then_the_line(invoke("--debug", "status", csv))


def test_debug_with_json_logs_puts_the_traceback_in_the_json_error_line(tmp_path: Path) -> None:
    # The plain traceback broke --log-json's promise of JSON lines only on stderr.
    csv = tmp_path / "x.csv"
    Path(f"{csv}.journal").write_bytes(b"not a database " * 100)
    result = invoke("--log-json", "--debug", "status", csv)
    assert result.exit_code == 2
    failed = _json_lines(result.stderr)[-1]  # (each line JSON)
    assert failed["event"] == "command_failed"
    assert "not a csvjournal journal" in failed["error"]
    trace = str(failed["traceback"])
    assert trace.startswith("Traceback (most recent call last):")
    assert "csvjournal.errors.SettingsError" in trace


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
    if csv_exists:
        assert f"run csvjournal init {csv}" in line
    else:  # (init would refuse it too)
        assert "no such file" in line
        assert "run csvjournal init" not in line
    assert state_of(tmp_path) == before


def test_the_init_hint_for_a_csv_named_like_an_option_works_as_typed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("-x.csv").write_text("ID\n1\n")
    line = assert_error(invoke("status", "--", "-x.csv"), "no journal for -x.csv")
    assert "run csvjournal init ./-x.csv --key COLUMN" in line
    ok(invoke("init", "./-x.csv", "--key", "ID"))


@pytest.mark.parametrize("command", ["backups", "pending", "status", "run"])
def test_a_csv_whose_journal_was_lost_is_pointed_to_its_newest_backup(
    tmp_path: Path, command: str
) -> None:
    csv = tmp_path / "plain.csv"
    csv.write_text("ID,NAME\n1,a\n")
    ok(invoke("init", csv, "--key", "ID"))
    backup = ok(invoke("backup", csv)).strip()
    for leftover in tmp_path.glob("plain.csv.journal*"):
        leftover.unlink()
    line = assert_error(invoke(command, csv, *ON_A_JOURNAL[command]), f"no journal for {csv}")
    assert f"csvjournal restore {csv} {backup}" in line


def test_a_csv_with_no_backup_to_restore_is_pointed_to_init(tmp_path: Path) -> None:
    csv = tmp_path / "plain.csv"
    csv.write_text("ID,NAME\n1,a\n")
    ok(invoke("init", csv, "--key", "ID"))
    ok(invoke("backup", csv))
    for backup in (tmp_path / "plain.csv.backups").glob("2*"):
        (backup / "plain.csv.journal").unlink()  # a backup with no journal to restore
    for leftover in tmp_path.glob("plain.csv.journal*"):
        leftover.unlink()
    line = assert_error(invoke("pending", csv), f"no journal for {csv}")
    assert f"run csvjournal init {csv} --key COLUMN" in line
    assert "restore" not in line


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


def test_an_init_that_never_finished_is_said_so_and_can_be_done_again(tmp_path: Path) -> None:
    csv = tmp_path / "jobs.csv"
    csv.write_text("ID,NAME\n1,a\n2,b\n")
    Path(f"{csv}.journal").write_bytes(b"")  # SQLite made the file; init was killed then
    for command in (["pending"], ["recover"], ["run", "--", "true"]):
        assert_error(invoke(command[0], csv, *command[1:]), "creation is not finished")
    assert "created" in ok(invoke("init", csv, "--key", "ID"))
    assert ok(invoke("pending", csv)).split() == ["1", "2"]


def _a_job_of_ones_own(csv: Path) -> None:
    csv.write_text("PO_NUMBER,NOTE\nMINE-1,precious\n")
    ok(invoke("init", csv, "--key", "PO_NUMBER"))
    ok(invoke("record", csv, "MINE-1", "--status", "COMPLETED"))


def _demo_refused(folder: Path) -> None:
    before = state_of(folder)
    companions = sorted(folder.glob("*-[ws][ah][lm]"))  # the -wal/-shm files there
    assert_error(invoke("demo", folder), "not written by an earlier demo")
    assert state_of(folder) == before
    assert sorted(folder.glob("*-[ws][ah][lm]")) == companions  # its look left none


def test_demo_never_replaces_a_job_it_did_not_write(tmp_path: Path) -> None:
    _a_job_of_ones_own(tmp_path / "orders.csv")
    _demo_refused(tmp_path)


def _an_earlier_demo(folder: Path) -> Path:
    """An earlier demo's files in ``folder`` (quickly: no workers), its journal closed."""
    csv = folder / "orders.csv"
    write_sheet(csv, rows=5)
    with csvjournal.open(csv, key="PO_NUMBER") as journal:
        mark_as_demo(csv, journal)
    return csv


def test_demo_never_replaces_a_job_made_since_in_a_folder_of_an_earlier_demo(
    tmp_path: Path,
) -> None:
    csv = _an_earlier_demo(tmp_path)
    for made in tmp_path.glob("orders.csv.*"):  # the user's own job in its place
        shutil.rmtree(made) if made.is_dir() else made.unlink()
    _a_job_of_ones_own(csv)
    _demo_refused(tmp_path)
    Path(f"{csv}.journal").unlink()  # a CSV of the user's, its journal gone
    _demo_refused(tmp_path)


def test_demo_never_replaces_a_demo_journal_a_process_has_open(tmp_path: Path) -> None:
    csv = _an_earlier_demo(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(csv)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "up\n"
        assert holder.poll() is None
        before = state_of(tmp_path)
        assert_error(invoke("demo", tmp_path), "in use by a running process")
        assert state_of(tmp_path) == before
    finally:
        holder.kill()
        holder.wait()


_HOLDER = """\
import sys, time
import structlog
import csvjournal
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
journal = csvjournal.open(sys.argv[1], export=False)
journal.pending()
print("up", flush=True)
time.sleep(60)
"""


# -- log output ------------------------------------------------------------------------


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


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
def test_with_log_json_the_error_is_a_json_line_too(tmp_path: Path, after: bool) -> None:
    command = ["pending", tmp_path / "bare.csv"]
    result = invoke(*([*command, "--log-json"] if after else ["--log-json", *command]))
    assert result.exit_code == 2
    (line,) = _json_lines(result.stderr)  # stderr holds JSON lines only
    assert (line["event"], line["level"], line["exit_code"]) == ("command_failed", "error", 2)
    assert "no journal for" in str(line["error"])


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--log-json", "statsu", "o.csv"], "No such command 'statsu'"),
        (["--log-json", "status", "--bogus", "o.csv"], "No such option '--bogus'"),
        (["status", "o.csv", "--log-json", "--bogus"], "No such option '--bogus'"),
    ],
    ids=["unknown-command", "unknown-option", "flag-after"],
)
def test_with_log_json_a_usage_error_is_a_json_line_too(args: list[str], said: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    (line,) = _json_lines(result.stderr)
    assert line["event"] == "command_failed"
    assert said in str(line["error"])


def test_log_json_after_the_command_of_run_is_the_commands(tmp_path: Path) -> None:
    result = invoke("run", tmp_path / "none.csv", "--bogus", "--", "echo", "--log-json")
    assert result.exit_code == 2
    assert result.stderr.startswith("csvjournal: error: No such option '--bogus'")


def test_plain_logs_show_warnings_only(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("ID\n1\n")
    result = invoke("init", csv, "--key", "ID")
    ok(result)
    assert result.stderr == ""


@pytest.mark.parametrize("after", [False, True], ids=["before-command", "after-command"])
def test_log_json_is_taken_before_or_after_the_command(tmp_path: Path, after: bool) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("ID\n1\n2\n")

    def args(*command: object) -> list[object]:
        return [*command, "--log-json"] if after else ["--log-json", *command]

    result = invoke(*args("init", csv, "--key", "ID"))
    ok(result)
    assert "journal_created" in [entry["event"] for entry in _json_lines(result.stderr)]
    result = invoke(*args("record", csv, "1", "--status", "COMPLETED"))
    assert ok(result) == "recorded #1\n"
    _json_lines(result.stderr)
    result = invoke(*args("run", csv, "--max-attempts", "1"), "--", "false")
    assert result.exit_code == 1, result.stderr
    failed = [e for e in _json_lines(result.stderr) if e["event"] == "run_row_failed"]
    assert [str(entry["key"]) for entry in failed] == ["2"]  # and no progress bar


def test_debug_is_taken_after_the_command_too(tmp_path: Path) -> None:
    csv = tmp_path / "x.csv"
    Path(f"{csv}.journal").write_bytes(b"not a database " * 100)
    _traceback_then_the_line(invoke("status", csv, "--debug"))


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_lists_the_late_flags_in_its_help(command: str) -> None:
    out = ok(invoke(command, "--help"))
    assert "--log-json" in out
    assert "--debug" in out


def test_backup_names_the_new_backup_as_backups_lists_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the CSV given by a relative path
    Path("plain.csv").write_text("ID,NAME\n1,a\n")
    ok(invoke("init", "plain.csv", "--key", "ID"))
    made = ok(invoke("backup", "plain.csv")).strip()
    assert made.startswith("plain.csv.backups/")
    assert ok(invoke("backups", "plain.csv")).split()[-1] == made


@pytest.mark.parametrize("command", ["status", "init", "pending"])
def test_a_csv_argument_naming_a_journal_or_a_folder_is_refused(
    tmp_path: Path, command: str
) -> None:
    csv = tmp_path / "o.csv"
    csv.write_text("ID\n1\n")
    ok(invoke("init", csv, "--key", "ID"))
    before = state_of(tmp_path)
    extra = ["--key", "ID"] if command == "init" else []
    assert_error(
        invoke(command, f"{csv}.journal", *extra), f"is a journal; name the CSV it keeps: {csv}"
    )
    assert_error(invoke(command, "", *extra), "an empty name")
    assert state_of(tmp_path) == before


@pytest.mark.parametrize(
    "words", [["demo", ""], ["export", "o.csv", "--to", ""], ["restore", "o.csv", ""]]
)
def test_an_empty_path_is_refused_not_taken_for_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, words: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # an unset variable: `csvjournal demo "$DIR"`
    Path("o.csv").write_text("ID\n1\n")
    ok(invoke("init", "o.csv", "--key", "ID"))
    before = state_of(tmp_path)
    option = "--to" if "--to" in words else ("BACKUP" if words[0] == "restore" else "DIRECTORY")
    assert option in assert_error(invoke(*words), "an empty name")
    assert state_of(tmp_path) == before


@pytest.mark.parametrize("words", [["status", "o.csv/"], ["export", "o.csv", "--to", "out/"]])
def test_a_files_name_ending_in_a_slash_is_refused_as_a_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, words: list[str]
) -> None:
    # `export --to out/` wrote a file named out; `status o.csv/` read o.csv
    monkeypatch.chdir(tmp_path)
    Path("o.csv").write_text("ID\n1\n")
    ok(invoke("init", "o.csv", "--key", "ID"))
    before = state_of(tmp_path)
    assert_error(invoke(*words), f"'{words[-1]}' ends in /: a folder's name, where a file's")
    assert state_of(tmp_path) == before


def test_init_counts_rows_in_words(tmp_path: Path) -> None:
    one = tmp_path / "one.csv"
    one.write_text("ID\n1\n")
    assert (
        ok(invoke("init", one, "--key", "ID")) == f"created {one}.journal: 1 row, key column ID\n"
    )


def test_a_demo_stopped_before_it_marked_its_journal_is_replaced_by_the_next(
    tmp_path: Path,
) -> None:
    csv = prepare_demo(tmp_path)  # the sheet written, the mark without a token yet
    csvjournal.open(csv, key="PO_NUMBER").close()  # its journal made; Ctrl-C here
    assert prepare_demo(tmp_path) == csv  # replaced: no record of anyone's was in it
    assert not Path(f"{csv}.journal").exists()
    with csvjournal.open(csv, key="PO_NUMBER") as journal:  # someone works on the sheet
        journal.record("PO-2026-00001", "COMPLETED")
    with pytest.raises(CliError, match="not written by an earlier demo"):
        prepare_demo(tmp_path)
    assert Path(f"{csv}.journal").exists()


def test_ctrl_c_while_the_command_line_is_read_is_one_line_and_130(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # (click's own reading of the group's options: it said "Aborted!" and exited 1)
    def interrupted(*_args: object) -> list[str]:
        raise KeyboardInterrupt

    monkeypatch.setattr(click.Group, "parse_args", interrupted)
    result = invoke("status", "x.csv")
    assert result.exit_code == 130
    assert result.stderr == "csvjournal: interrupted\n"
