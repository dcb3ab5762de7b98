"""CSVs that are not UTF-8 on the command line (--encoding of init, run and import --merge),
and what init shows while it imports."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from _cli import assert_error, invoke, ok, state_of
from rich.console import Console

import csvjournal
from csvjournal.cli import _output

LATIN1 = "ID,NAME\n1,Müller\n2,Gérard\n"


def _latin1_csv(tmp_path: Path) -> Path:
    csv = tmp_path / "legacy.csv"
    csv.write_bytes(LATIN1.encode("latin-1"))
    return csv


def test_init_encoding_imports_a_latin1_csv_and_exports_latin1(tmp_path: Path) -> None:
    csv = _latin1_csv(tmp_path)
    before = state_of(tmp_path)
    assert_error(invoke("init", csv, "--key", "ID"), "bytes that are not utf-8")
    assert state_of(tmp_path) == before
    out = ok(invoke("init", csv, "--key", "ID", "--encoding", "latin-1"))
    assert out == f"created {csv}.journal: 2 rows, key column ID\n"
    ok(invoke("record", csv, "2", "--status", "COMPLETED", "NOTE=Ærø"))
    lines = csv.read_bytes().decode("latin-1").splitlines()  # every export in latin-1
    assert lines[:2] == ["ID,NAME,STATUS,LAST_PROCESSED,NOTE", "1,Müller,PENDING,,"]
    assert lines[2].startswith("2,Gérard,COMPLETED,")
    assert lines[2].endswith(",Ærø")


def test_import_merge_reads_the_csv_in_the_journals_encoding(tmp_path: Path) -> None:
    csv = _latin1_csv(tmp_path)
    with csvjournal.open(csv, key="ID", encoding="latin-1"):
        pass
    with csv.open("ab") as handle:  # a row added by hand, in the file's own encoding
        handle.write("3,Åsa,PENDING,\n".encode("latin-1"))
    line = assert_error(invoke("record", csv, "1", "--status", "COMPLETED"), "edited by hand")
    assert "csvjournal import --merge" in line
    out = ok(invoke("import", csv, "--merge"))  # what the error says to do, as it says it
    assert out.startswith(f"merged {csv}: 1 added, 0 updated")
    ok(invoke("record", csv, "3", "--status", "COMPLETED"))  # the CSV is accepted again
    lines = csv.read_bytes().decode("latin-1").splitlines()
    assert lines[1:3] == ["1,Müller,PENDING,", "2,Gérard,PENDING,"]
    assert lines[3].startswith("3,Åsa,COMPLETED,")


def test_import_merge_encoding_reads_a_file_saved_in_another(tmp_path: Path) -> None:
    csv = _latin1_csv(tmp_path)
    ok(invoke("init", csv, "--key", "ID", "--encoding", "latin-1"))
    text = csv.read_bytes().decode("latin-1").replace("Gérard", "Gérald")
    csv.write_bytes(text.encode("utf-8"))  # an editor saved it as UTF-8
    ok(invoke("import", csv, "--merge", "--encoding", "utf-8"))
    with csvjournal.open(csv, export=False) as journal:
        assert journal.get("2")["NAME"] == "Gérald"  # type: ignore[index]
        assert journal.get("1")["NAME"] == "Müller"  # type: ignore[index]


def test_run_key_encoding_creates_the_journal_from_a_cp1252_csv(tmp_path: Path) -> None:
    csv = tmp_path / "prices.csv"
    csv.write_bytes("ID;PRICE\n1;5 €\n2;7 €\n".encode("cp1252"))
    argv = ["--", sys.executable, "-c", "import sys; sys.exit(sys.argv[1] != '5 €')", "{PRICE}"]
    before = state_of(tmp_path)
    assert_error(invoke("run", csv, "--key", "ID", *argv), "bytes that are not utf-8")
    assert state_of(tmp_path) == before
    result = invoke("run", csv, "--key", "ID", "--encoding", "cp1252", "--max-attempts", "1", *argv)
    assert result.exit_code == 1, result.stderr
    lines = csv.read_bytes().decode("cp1252").splitlines()
    assert lines[0].startswith("ID;PRICE;STATUS;")
    assert lines[1].startswith("1;5 €;COMPLETED;")
    assert lines[2].startswith("2;7 €;FAILED;")


@pytest.mark.parametrize(
    "args",
    [
        ["init", "--key", "ID"],
        ["run", "--key", "ID", "--", "true"],
        ["import", "--merge"],
    ],
    ids=["init", "run", "import"],
)
@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("no-such-codec", "unknown encoding 'no-such-codec'"),
        ("base64", "'base64' is not an encoding a CSV file can be written in"),
        ("idna", "'idna' is not an encoding a CSV file can be written in"),
        ("unicode_escape", "'unicode_escape' is not an encoding a CSV file can be written in"),
    ],
)
def test_an_unknown_encoding_is_one_line_and_changes_nothing(
    tmp_path: Path, args: list[str], name: str, problem: str
) -> None:
    csv = _latin1_csv(tmp_path)
    if args[0] == "import":
        with csvjournal.open(csv, key="ID", encoding="latin-1"):
            pass
    before = state_of(tmp_path)
    command, *rest = args
    assert_error(invoke(command, csv, "--encoding", name, *rest), problem)
    assert state_of(tmp_path) == before


# -- what init shows while it imports --------------------------------------------------


def _terminal_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the command line take stderr for a terminal."""
    monkeypatch.setattr(
        _output, "stderr_console", lambda: Console(stderr=True, force_terminal=True, width=100)
    )


def test_init_shows_the_import_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    csv = tmp_path / "big.csv"
    csv.write_text("ID\n" + "".join(f"{n}\n" for n in range(1000)))
    _terminal_stderr(monkeypatch)
    result = invoke("init", csv, "--key", "ID")
    assert ok(result) == f"created {csv}.journal: 1,000 rows, key column ID\n"  # stdout clean
    assert f"importing {csv}" in result.stderr


@pytest.mark.parametrize(
    ("command", "doing", "said"),
    [
        (["import", "--merge"], "merging", "merged "),
        (["recover"], "recovering", "integrity check: ok"),
        (["backup"], "backing up", ""),
        (["export"], "exporting", " is current"),
        (["restore"], "restoring", "restored "),
    ],
)
def test_long_commands_show_what_they_do_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str], doing: str, said: str
) -> None:
    csv = tmp_path / "big.csv"
    csv.write_text("ID\n" + "".join(f"{n}\n" for n in range(1000)))
    ok(invoke("init", csv, "--key", "ID"))
    if command == ["restore"]:
        command = ["restore", ok(invoke("backup", csv)).strip()]
    if command[0] == "import":  # an edit to merge (csvjournal's own export has none)
        csv.write_text(csv.read_text() + "new,,\n")
    _terminal_stderr(monkeypatch)
    result = invoke(command[0], csv, *command[1:])
    assert said in ok(result)  # stdout clean
    assert f"{doing} {csv}" in result.stderr


def test_init_shows_no_import_without_a_terminal_or_with_json_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("ID\n1\n")
    result = invoke("init", csv, "--key", "ID")
    ok(result)
    assert result.stderr == ""
    csv = tmp_path / "u.csv"
    csv.write_text("ID\n1\n")
    _terminal_stderr(monkeypatch)
    result = invoke("init", csv, "--key", "ID", "--log-json")
    ok(result)
    assert "importing" not in result.stderr
    assert all(line.startswith("{") for line in result.stderr.splitlines())


def test_a_failure_message_the_encoding_lacks_is_written_with_question_marks(
    tmp_path: Path,
) -> None:
    csv = tmp_path / "prices.csv"
    csv.write_bytes("ID;PRICE\n1;5 €\n".encode("cp1252"))
    fail = "import sys; print('error → retry later', file=sys.stderr); sys.exit(4)"
    argv = ["--", sys.executable, "-c", fail]
    result = invoke("run", csv, "--key", "ID", "--encoding", "cp1252", "--max-attempts", "1", *argv)
    assert result.exit_code == 1, result.stderr  # some rows failed: no crash, no traceback
    row = csv.read_bytes().decode("cp1252").splitlines()[1].split(";")
    assert row[:3] == ["1", "5 €", "FAILED"]
    assert "error ? retry later" in row
    assert "4" in row


@pytest.mark.parametrize(
    ("encoding", "value"),
    [("latin-1", "東京"), ("cp1252", "→"), ("utf-8", "caf\udce9")],  # the last: argv's \xe9
)
def test_record_refuses_text_the_csv_cannot_hold_and_the_csv_stays_current(
    tmp_path: Path, encoding: str, value: str
) -> None:
    csv = tmp_path / "sheet.csv"
    csv.write_bytes("ID,NAME\n1,Müller\n".encode(encoding))
    with csvjournal.open(csv, key="ID", encoding=encoding) as journal:
        for fields in ({"NAME": value}, {value: "x"}):
            with pytest.raises(csvjournal.RecordError, match=encoding):
                journal.record("1", "COMPLETED", fields=fields)
        with pytest.raises(csvjournal.RecordError, match="the key"):
            journal.record(value, "COMPLETED")
        assert journal.get("1")["STATUS"] == "PENDING"  # type: ignore[index]
        journal.record("1", "COMPLETED", NAME="Gérard")  # the exports go on
        journal.flush(timeout=10)
    assert csv.read_bytes().decode(encoding).splitlines()[1].startswith("1,Gérard,COMPLETED,")
    result = invoke("record", csv, "1", f"NAME={value}")
    assert_error(result, "cannot write")
