"""The engine of ``csvjournal run``: command templates, environment names, the Runner."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

import csvjournal
from csvjournal import _runs
from csvjournal._leases import Action
from csvjournal.errors import CommandError, CsvJournalError
from csvjournal.runner import RunConfig, Runner, Template, env_name

COLUMNS = ["ID", "NAME", "STATUS", "LAST_PROCESSED", "L1 UU Supplier Name"]


# -- Template -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "row", "expected"),
    [
        (["echo", "{ID}"], {"ID": "7"}, ["echo", "7"]),
        (["--name={NAME}", "{ID}-{ID}"], {"ID": "7", "NAME": "x y"}, ["--name=x y", "7-7"]),
        (["{L1 UU Supplier Name}"], {"L1 UU Supplier Name": "ACME"}, ["ACME"]),
        (["{{ID}}"], {"ID": "7"}, ["{ID}"]),
        (["{{{ID}}}"], {"ID": "7"}, ["{7}"]),
        (["{{", "}}", "a{{b}}c"], {}, ["{", "}", "a{b}c"]),
        (["lone { and } stay", "{ID"], {"ID": "7"}, ["lone { and } stay", "{ID"]),
        (['json={{"id": "{ID}"}}'], {"ID": "7"}, ['json={"id": "7"}']),
        (["no placeholders", ""], {"ID": "7"}, ["no placeholders", ""]),
    ],
)
def test_template_fills_placeholders_and_unescapes_braces(
    argv: list[str], row: dict[str, str], expected: list[str]
) -> None:
    assert Template(argv, COLUMNS).render(row) == expected


def test_template_inserts_values_literally_without_expanding_them_again() -> None:
    template = Template(["{ID}", "{NAME}"], COLUMNS)
    row = {"ID": "{NAME}", "NAME": "$(touch pwned) `id`; {{x}}"}
    assert template.render(row) == ["{NAME}", "$(touch pwned) `id`; {{x}}"]


def test_template_gives_one_argument_per_argument_whatever_the_value() -> None:
    template = Template(["prog", "{NAME}"], COLUMNS)
    assert template.render({"NAME": "a b\nc 'd' \"e\""}) == ["prog", "a b\nc 'd' \"e\""]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["sh", "-c", "{ echo {ID}; } >&2"], ["sh", "-c", "{ echo 7; } >&2"]),
        (["{ not a column }", "{print $1 }"], ["{ not a column }", "{print $1 }"]),
    ],
)
def test_template_leaves_shell_braces_with_spaces_as_text(
    argv: list[str], expected: list[str]
) -> None:
    assert Template(argv, COLUMNS).render({"ID": "7"}) == expected


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["echo", "{NOPE}"], "{NOPE}"),
        (["echo", "--x={id}"], "{id}"),  # column names are case-sensitive
        (["echo", "{I-D}"], "{I-D}"),
        (["echo", "{}"], "{}"),
        (["{ID}", "{{ok}}", "{STATUS}{MISSING}"], "{MISSING}"),
    ],
)
def test_template_refuses_a_placeholder_that_names_no_column(argv: list[str], named: str) -> None:
    with pytest.raises(CommandError, match="names no column") as caught:
        Template(argv, COLUMNS)
    assert named in str(caught.value)
    assert "ID, NAME, STATUS" in str(caught.value)  # the message lists the columns
    assert isinstance(caught.value, CsvJournalError)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("placeholder", "meant"),
    [
        ("{L1 UU supplier name}", "{L1 UU Supplier Name}"),
        ("{L1 UU Supplier Name }", "{L1 UU Supplier Name}"),
        ("{L1  UU Supplier Name}", "{L1 UU Supplier Name}"),
        ("{ID }", "{ID}"),
        ("{id}", "{ID}"),
    ],
)
def test_template_says_which_column_a_near_miss_meant(placeholder: str, meant: str) -> None:
    # With a space in it, a name that is no column would pass as shell text: not when it
    # is a column's name but for case or spaces.
    with pytest.raises(CommandError, match="names no column") as caught:
        Template(["echo", placeholder], COLUMNS)
    assert f"did you mean {meant}?" in str(caught.value)


def test_template_refuses_an_empty_command() -> None:
    with pytest.raises(CommandError, match="no command"):
        Template([], COLUMNS)


# -- env_name -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "name"),
    [
        ("PO_NUMBER", "CSVJ_PO_NUMBER"),
        ("status", "CSVJ_STATUS"),
        ("L1 UU Supplier Name", "CSVJ_L1_UU_SUPPLIER_NAME"),
        ("order-date", "CSVJ_ORDER_DATE"),
        ("Größe", "CSVJ_GR_SSE"),  # "ß".upper() is "SS"; "Ö" is not A-Z
        ("prix €", "CSVJ_PRIX__"),
        ("田中", "CSVJ___"),
        ("a.b/c", "CSVJ_A_B_C"),
        ("2nd", "CSVJ_2ND"),
        ("", "CSVJ_"),
    ],
)
def test_env_name_upper_cases_and_replaces_every_other_character(column: str, name: str) -> None:
    assert env_name(column) == name


def test_env_names_are_valid_shell_variable_names() -> None:
    for column in ["x y", "é", "$(id)", "a=b", "-", "\n"]:
        name = env_name(column)
        assert name.startswith("CSVJ_")
        assert all(c.isascii() and (c.isupper() or c.isdigit() or c == "_") for c in name)


# -- Runner ---------------------------------------------------------------------------


def _script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "cmd.py"
    path.write_text(body)
    return [sys.executable, str(path)]


@pytest.fixture
def rows(tmp_path: Path) -> Path:
    csv = tmp_path / "rows.csv"
    csv.write_text("ID,NAME\n1,one\n2,two\n3,three\n4,four\n")
    return csv


def test_runner_records_success_and_failure_with_retries(tmp_path: Path, rows: Path) -> None:
    log = tmp_path / "calls.log"
    command = _script(
        tmp_path,
        "import sys\n"
        f"open({str(log)!r}, 'a').write(sys.argv[1] + '\\n')\n"
        "if int(sys.argv[1]) % 2 == 0:\n"
        "    sys.stderr.write('first line\\n  even rows fail  \\n\\n')\n"
        "    sys.exit(5)\n",
    )
    config = RunConfig(command=(*command, "{ID}"), workers=2, max_attempts=3, backoff=0.01, grace=5)
    with csvjournal.open(rows, key="ID", keep_backups=0) as journal:
        runner = Runner(journal, config)
        runner.wait(runner.start())
        assert journal.get("1")["STATUS"] == "COMPLETED"  # type: ignore[index]
        assert journal.get("1")["EXIT_CODE"] == "0"  # type: ignore[index]
        failed = journal.get("2")
        assert failed is not None
        assert failed["STATUS"] == "FAILED"
        assert failed["EXIT_CODE"] == "5"
        assert failed["ERROR_MESSAGE"] == "even rows fail"
        assert journal.attempts("2") == 3
        assert journal.attempts("1") == 1
    calls = log.read_text().split()
    assert sorted(calls) == ["1", "2", "2", "2", "3", "4", "4", "4"]
    stats = runner.stats
    assert (stats.total, stats.succeeded, stats.failed, stats.exhausted) == (4, 2, 6, 2)
    assert stats.given_back == 0
    assert stats.running == 0
    assert not stats.interrupted


def test_a_runner_stopped_before_it_starts_claims_nothing(tmp_path: Path, rows: Path) -> None:
    marker = tmp_path / "ran"
    command = _script(tmp_path, f"open({str(marker)!r}, 'a').write('x')\n")
    with csvjournal.open(rows, key="ID", keep_backups=0) as journal:
        runner = Runner(journal, RunConfig(command=tuple(command), workers=2))
        runner.stop()
        runner.wait(runner.start())
        assert journal.counts() == {"PENDING": 4}
    assert runner.stats.interrupted
    assert not marker.exists()


def test_a_command_that_cannot_start_fails_with_exit_code_127(rows: Path, tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-program")
    config = RunConfig(command=(missing, "{ID}"), workers=1, max_attempts=1)
    with csvjournal.open(rows, key="ID", keep_backups=0) as journal:
        runner = Runner(journal, config)
        runner.wait(runner.start())
        row = journal.get("3")
    assert row is not None
    assert row["STATUS"] == "FAILED"
    assert row["EXIT_CODE"] == "127"
    assert "cannot run" in row["ERROR_MESSAGE"]
    assert "no-such-program" in row["ERROR_MESSAGE"]


def test_a_program_that_is_not_executable_fails_with_exit_code_126(
    rows: Path, tmp_path: Path
) -> None:
    script = tmp_path / "not-executable.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)  # as a shell says: found, but cannot be run
    config = RunConfig(command=(str(script), "{ID}"), workers=1, max_attempts=1)
    with csvjournal.open(rows, key="ID", keep_backups=0) as journal:
        runner = Runner(journal, config)
        runner.wait(runner.start())
        row = journal.get("3")
    assert row is not None
    assert (row["STATUS"], row["EXIT_CODE"]) == ("FAILED", "126")
    assert "Permission denied" in row["ERROR_MESSAGE"]


def test_the_runner_puts_every_column_in_the_environment(tmp_path: Path) -> None:
    csv = tmp_path / "env.csv"
    csv.write_text("id,Größe,L1 UU Supplier Name\nk1,XL,ACME ; $(id)\n", encoding="utf-8")
    out = tmp_path / "env.json"
    command = _script(
        tmp_path,
        "import json, os\n"
        "env = {k: v for k, v in os.environ.items() if k.startswith('CSVJ_')}\n"
        f"open({str(out)!r}, 'w').write(json.dumps(env))\n",
    )
    with csvjournal.open(csv, key="id", keep_backups=0) as journal:
        runner = Runner(journal, RunConfig(command=tuple(command), workers=1))
        runner.wait(runner.start())
        assert journal.get("k1")["STATUS"] == "COMPLETED"  # type: ignore[index]
    env = json.loads(out.read_text())
    assert env == {
        "CSVJ_ID": "k1",
        "CSVJ_GR_SSE": "XL",
        "CSVJ_L1_UU_SUPPLIER_NAME": "ACME ; $(id)",
        "CSVJ_STATUS": "IN_PROGRESS",
        "CSVJ_LAST_PROCESSED": env["CSVJ_LAST_PROCESSED"],
    }
    assert env["CSVJ_LAST_PROCESSED"].endswith("Z")


def test_the_runner_refuses_an_unknown_placeholder_before_claiming(rows: Path) -> None:
    with csvjournal.open(rows, key="ID", keep_backups=0) as journal:
        with pytest.raises(CommandError, match=r"\{NOPE\}"):
            Runner(journal, RunConfig(command=("echo", "{NOPE}")))
        assert journal.counts() == {"PENDING": 4}
        assert journal.history("1") == []


def _rows_held(csv: Path) -> int:
    with csvjournal.open(csv, export=False) as journal:
        return journal.counts().get("IN_PROGRESS", 0)


def _returned_at_start(journal: csvjournal.Journal) -> list[dict[str, object]]:
    runner = Runner(journal, RunConfig(command=("true",), workers=2, grace=5))
    runner.stop()  # stopped first: it claims nothing, and the rows stay to see
    with capture_logs() as logs:
        runner.wait(runner.start())
    return [entry for entry in logs if entry["event"] == "rows_of_gone_run_returned"]


@pytest.mark.slow
def test_a_run_takes_the_rows_of_a_run_killed_outright_at_once(tmp_path: Path, rows: Path) -> None:
    hang = _script(tmp_path, "import time\ntime.sleep(600)\n")
    csvjournal.open(rows, key="ID", keep_backups=0).close()
    argv = [sys.executable, "-m", "csvjournal", "run", str(rows), "--workers", "2", "--", *hang]
    first = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while _rows_held(rows) < 2:
            assert time.monotonic() < deadline, "the first run never claimed its rows"
            time.sleep(0.1)
    finally:
        first.kill()  # kill -9: its rows stay leased for 300 s
        first.wait()
    worker = f"{socket.gethostname()}:{first.pid}:run-"
    with csvjournal.open(rows, keep_backups=0) as journal:
        (returned,) = _returned_at_start(journal)  # (and its sleeping commands are stopped)
        assert returned["rows"] == 2
        assert journal.pending()[:2] == ["1", "2"]
        assert journal.attempts("1") == 1  # counted, as when a lease runs out
        note = journal.history("1")[-1].note
        assert note is not None
        assert note.startswith(f"lease of {worker}")
        assert note.endswith("its run is gone")
        assert _returned_at_start(journal) == []  # that run is forgotten


@pytest.mark.parametrize(
    ("other", "returned"),
    [("namespace", False), ("boot", True)],
    ids=["another-pid-namespace", "before-the-last-boot"],
)
def test_the_rows_of_a_run_out_of_sight_wait_for_their_leases(
    rows: Path, other: str, returned: bool
) -> None:
    # a run in another PID namespace (a container with this host name) may be alive;
    # one noted before the machine's last boot is not
    host = socket.gethostname()
    with csvjournal.open(rows, key="ID", keep_backups=0) as journal:
        assert journal.claim(1, lease=300, worker=f"{host}:4242:run-0") == ["1"]
        here = _runs._here()
        assert here is not None
        run = {**here, "pid": 4242, "ticks": 1}
        run[other] = [0, 0] if other == "namespace" else "another boot"
        noted = json.dumps({f"{host}:4242": run})
        journal._write(Action(lambda conn, _w: conn.execute(_runs._WRITE, ("runs", noted))))
        assert bool(_returned_at_start(journal)) == returned
        assert (journal.get("1")["STATUS"] == "PENDING") == returned  # type: ignore[index]
