"""The installed console script end to end: commands in their own processes, and the demo."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _cli import (
    CONSOLE_SCRIPT,
    SUBPROCESS_TIMEOUT,
    _json_lines,
    assert_one_error_line,
    finish,
    read_rows,
    start,
)

import csvjournal
from csvjournal.cli._demo import _mark as mark_as_demo
from csvjournal.cli._demo import write_sheet
from csvjournal.csvio import temp_prefix


def script(*args: object, timeout: float = SUBPROCESS_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run the installed console script."""
    return subprocess.run(
        [str(CONSOLE_SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


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


# -- demo ------------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_runs_a_whole_job_and_replaces_an_earlier_demo(tmp_path: Path) -> None:
    # An earlier demo's files in the folder (built quickly here rather than by a second
    # 20-40 s demo): its journal, events, backups, a temp file; and a file of the user's.
    folder = tmp_path / "my demo"  # (a space: the commands it suggests paste as they are)
    folder.mkdir()
    csv = folder / "orders.csv"
    write_sheet(csv, rows=40)
    with csvjournal.open(csv, key="PO_NUMBER", terminal={"COMPLETED", "NO_ATTACHMENTS"}) as old:
        mark_as_demo(csv, old)
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
    (suggested,) = [line for line in out.splitlines() if line.startswith("next: ")]
    first, second = suggested.removeprefix("next: ").split("; ")
    assert shlex.split(first) == ["csvjournal", "status", str(csv)]
    assert shlex.split(second) == ["csvjournal", "history", str(csv), "PO-2026-00097"]

    data = csv.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    header = data[3:].split(b"\r\n")[0].decode()
    assert header.split(";")[:3] == ["PO_NUMBER", "STATUS", "SUPPLIER"]
    assert "NOTE" not in header
    rows = read_rows(csv, ";")
    assert [row["PO_NUMBER"] for row in rows] == [f"PO-2026-{n:05d}" for n in range(1, 2501)]
    with csvjournal.open(csv, export=False) as journal:  # the sheet shows the journal
        assert rows == [journal.get(row["PO_NUMBER"]) for row in rows]
        spent = {  # held by demo-2 on its last attempt when killed: the lease ran out
            row["PO_NUMBER"]
            for row in rows
            if row["STATUS"] == "PENDING"
            and [e.status for e in journal.history(row["PO_NUMBER"])].count("IN_PROGRESS") == 3
            and journal.history(row["PO_NUMBER"])[-1].note == "lease of demo-2 expired"
        }
    for row in rows:
        if row["PO_NUMBER"] in spent:
            assert len(spent) == 1
        elif int(row["PO_NUMBER"].rsplit("-", 1)[1]) % 97 == 0:
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


def test_ctrl_c_during_a_command_is_one_line_and_exit_130(tmp_path: Path) -> None:
    csv = tmp_path / "big.csv"
    csv.write_text("ID,NAME\n" + "".join(f"{n},name {n}\n" for n in range(200_000)))
    child = subprocess.Popen(
        [str(CONSOLE_SCRIPT), "init", str(csv), "--key", "ID"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    journal = Path(f"{csv}.journal")
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT
    while not journal.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)  # the import has begun: the program is running, not starting
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=SUBPROCESS_TIMEOUT)
    assert child.returncode == 130, err
    assert err.splitlines() == ["csvjournal: interrupted"], err
    assert out == ""
    again = script("init", csv, "--key", "ID")  # the import begun is done again
    assert again.returncode == 0, again.stderr


# A Ctrl-C at the moment SQLAlchemy starts to load, as the console script's entry runs
_CTRL_C_WHILE_LOADING = """\
import os, signal, sys

class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == "sqlalchemy":
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, CtrlC())
sys.argv = ["csvjournal", *sys.argv[1:]]
from csvjournal._entry import main
main()
"""


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        ([], "csvjournal: interrupted"),
        (["--log-json"], '"event": "command_interrupted"'),
        (["--", "--log-json"], "csvjournal: interrupted"),  # a CSV named --log-json
    ],
)
def test_ctrl_c_while_the_command_line_loads_is_one_line_and_exit_130(
    tmp_path: Path, flags: list[str], line: str
) -> None:
    csv = tmp_path / "a.csv"
    done = subprocess.run(
        [sys.executable, "-c", _CTRL_C_WHILE_LOADING, "status", *flags, str(csv)],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )
    assert done.returncode == 130, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert line in done.stderr
    if flags == ["--log-json"]:
        assert json.loads(done.stderr)["exit_code"] == 130
    assert done.stdout == ""
    assert not csv.exists()


# A Ctrl-C as the command line's process ends: in its last atexit callback
_CTRL_C_AT_EXIT = """\
import atexit, os, signal, sys, time

def ctrl_c():
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)  # (a handler runs between two steps of Python code)

atexit.register(ctrl_c)  # the first registered runs last
sys.argv = ["csvjournal", *sys.argv[1:]]
from csvjournal._entry import main
main()
"""


@pytest.mark.parametrize("flags", [[], ["--log-json"]])
def test_ctrl_c_as_a_command_ends_is_one_line_and_exit_130(
    tmp_path: Path, flags: list[str]
) -> None:
    csv = tmp_path / "a.csv"
    csv.write_text("ID\n1\n")
    done = subprocess.run(
        [sys.executable, "-c", _CTRL_C_AT_EXIT, "init", *flags, str(csv), "--key", "ID"],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )
    assert done.returncode == 130, done.stderr  # (Python's own: a traceback, exit 0)
    assert done.stdout == f"created {csv}.journal: 1 row, key column ID\n"
    if flags:  # (after the command's own log lines)
        assert json.loads(done.stderr.splitlines()[-1])["event"] == "command_interrupted"
    else:
        assert done.stderr == "csvjournal: interrupted\n"


def test_the_console_script_loads_nothing_heavy_before_it_takes_ctrl_c() -> None:
    code = "import sys, csvjournal, csvjournal._entry; print(sorted(sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    for heavy in ["sqlalchemy", "structlog", "click", "csvjournal.journal"]:
        assert f"'{heavy}'" not in loaded


@pytest.mark.parametrize("module", ["errors", "events", "journal", "merge", "recovery", "backup"])
def test_a_bare_import_gives_the_submodules_as_before(module: str) -> None:
    code = f"import csvjournal; print(csvjournal.{module}.__name__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.stdout == f"csvjournal.{module}\n", done.stderr


def test_the_package_gives_every_public_name_and_refuses_others() -> None:
    for name in csvjournal.__all__:
        assert getattr(csvjournal, name) is not None
        assert name in dir(csvjournal)
    assert csvjournal.Journal.__module__ == "csvjournal.journal"
    assert issubclass(csvjournal.JournalBusyError, csvjournal.CsvJournalError)
    with pytest.raises(AttributeError, match="no attribute 'Jornal'"):
        csvjournal.Jornal  # noqa: B018


@pytest.mark.parametrize("trial", range(3))
def test_two_inits_at_once_make_one_journal_and_one_says_so(tmp_path: Path, trial: int) -> None:
    # Both printed "created" and exited 0 (the second opened the first's journal).
    csv = tmp_path / "a.csv"
    csv.write_text("ID,V\n" + "".join(f"{n},x\n" for n in range(20_000 + trial)))
    both = [start("init", csv, "--key", "ID") for _ in range(2)]
    results = [finish(child) for child in both]
    created = [out for code, out, _ in results if code == 0 and out.startswith("created")]
    assert len(created) == 1, results
    (code, _, err) = next(result for result in results if not result[1].startswith("created"))
    assert code == 2  # (or it met the first's import: the journal is locked)
    assert "already exists" in err or "locked by another writer" in err


@pytest.mark.parametrize("command", [["pending"], ["record", "1", "Z=1"]], ids=" ".join)
def test_a_command_run_with_stderr_closed_exits_as_it_would(
    tmp_path: Path, command: list[str]
) -> None:
    csv = tmp_path / "a.csv"
    csv.write_text("ID\n1\n", encoding="utf-8")
    assert script("init", csv, "--key", "ID").returncode == 0
    line = " ".join(
        shlex.quote(str(part)) for part in [CONSOLE_SCRIPT, command[0], csv, *command[1:]]
    )
    done = subprocess.run(  # `2>&-`: Python starts with sys.stderr None
        ["sh", "-c", f"{line} 2>&-"],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stdout
    assert done.stdout.strip() in {"1", "recorded #1"}


@pytest.mark.slow
@pytest.mark.parametrize("at", ["2. ", "3. "])
def test_ctrl_c_stops_the_demo_with_one_line_and_leaves_no_worker(tmp_path: Path, at: str) -> None:
    demo = subprocess.Popen(
        [str(CONSOLE_SCRIPT), "demo", str(tmp_path / "demo")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's job has
    )
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            if line.startswith(at):
                break
        os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C: every process of the group gets it
        out, err = demo.communicate(timeout=SUBPROCESS_TIMEOUT)
    finally:
        demo.kill()
    assert demo.returncode == 130, out
    assert err == "csvjournal: interrupted\n"
    deadline = time.monotonic() + 10  # no worker left running the job (multiprocessing's
    while _group_alive(demo.pid):  # resource tracker ends on its own, a moment later)
        assert time.monotonic() < deadline, "a process of the demo is still running"
        time.sleep(0.05)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True
