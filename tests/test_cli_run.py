"""The run command: a command per row, its outcome recorded, timeouts, placeholders, signals."""

from __future__ import annotations

import contextlib
import csv as csvmod
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _cli import (
    CONSOLE_SCRIPT,
    SUBPROCESS_TIMEOUT,
    _json_lines,
    assert_error,
    events,
    invoke,
    ok,
    read_rows,
    state_of,
    statuses,
    wait_for,
)
from _exporter import write_protect

import csvjournal
from csvjournal._pids import stopped
from csvjournal.csvio import EXCEL_MAX_CELL


def claims(csv: Path, key: str) -> int:
    return sum(1 for event in events(csv, key) if event["status"] == "IN_PROGRESS")


def python_script(path: Path, body: str) -> list[str]:
    """A small Python program for `run` to call: its argv prefix."""
    path.write_text(body, encoding="utf-8")
    return [sys.executable, str(path)]


def process_gone(pid: int) -> bool:
    """No such process, or only its zombie left (an orphan's zombie awaits its reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}


@pytest.fixture
def rows8(tmp_path: Path) -> Path:
    """jobs.csv with a journal: eight rows keyed by ID."""
    path = tmp_path / "jobs.csv"
    path.write_text("ID,NAME\n" + "".join(f"{n},name {n}\n" for n in range(1, 9)))
    ok(invoke("init", path, "--key", "ID"))
    return path


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


@pytest.mark.parametrize(("command", "code"), [("raise SystemExit(1)", 1), ("pass", 0)])
def test_run_exits_with_the_jobs_outcome_when_its_readers_pipe_is_gone(
    rows8: Path, command: str, code: int
) -> None:
    # `run ... | head -0`: the summary met a closed pipe, taken as success: exit 0 for
    # a job whose every row failed.
    read, write = os.pipe()
    os.close(read)  # the reader left before the summary
    argv = [str(CONSOLE_SCRIPT), "run", str(rows8), "--max-attempts", "1", "--"]
    try:
        result = subprocess.run(
            [*argv, sys.executable, "-c", command],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=SUBPROCESS_TIMEOUT,
            check=False,
        )
    finally:
        os.close(write)
    assert result.returncode == code
    assert "Traceback" not in result.stderr
    assert set(statuses(rows8).values()) == {"FAILED" if code else "COMPLETED"}


def test_max_attempts_beyond_sqlites_integers_means_no_limit(rows8: Path) -> None:
    # every worker thread died on "Python int too large to convert to SQLite INTEGER"
    result = invoke("run", rows8, "--max-attempts", str(10**20), "--", sys.executable, "-c", "")
    assert result.exit_code == 0, result.stderr
    assert set(statuses(rows8).values()) == {"COMPLETED"}


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_run_key_on_a_fifo_or_device_is_refused_not_read(tmp_path: Path, kind: str) -> None:
    # a FIFO made run --key wait for a writer for good, /dev/zero read until memory ran
    # out (init refused them)
    csv = tmp_path / "o.csv"
    if kind == "fifo":
        os.mkfifo(csv)
    else:
        csv.symlink_to("/dev/zero")
    result = subprocess.run(  # (a process: a wait for a writer would not hang the tests)
        [str(CONSOLE_SCRIPT), "run", str(csv), "--key", "ID", "--", "true"],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )
    assert result.returncode == 2
    assert (
        result.stderr == f"csvjournal: error: {csv}: not a regular file (a FIFO or a device, say)\n"
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["o.csv"]


@pytest.mark.parametrize(
    ("on_term", "code"),
    [("signal.SIG_DFL", "-15"), ("lambda *a: sys.exit(0)", "-15"), ("signal.SIG_IGN", "-9")],
    ids=["dies", "exits-0", "ignores"],
)
def test_a_command_past_its_timeout_fails_however_it_ends(
    tmp_path: Path, on_term: str, code: str
) -> None:
    # a graceful shutdown (exit 0 on SIGTERM) is still a command that did not finish
    csv = tmp_path / "hang.csv"
    csv.write_text("ID\nslow\n")
    command = python_script(
        tmp_path / "hang.py",
        f"import signal, sys, time\nsignal.signal(signal.SIGTERM, {on_term})\ntime.sleep(600)\n",
    )
    result = invoke(
        "run", csv, "--key", "ID", "--timeout", "1", "--max-attempts", "1", "--", *command,
    )  # fmt: skip
    assert result.exit_code == 1, result.stderr
    (row,) = read_rows(csv)
    assert (row["STATUS"], row["EXIT_CODE"]) == ("FAILED", code)
    assert row["ERROR_MESSAGE"] == "timed out after 1 s"


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


LINGERS = """\
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open(sys.argv[1] + ".tmp", "w").write(f"{os.getpid()} {child.pid}")
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(600)
"""


@pytest.mark.slow
@pytest.mark.skipif(
    not Path("/proc/self/environ").exists(),
    reason="no /proc: only there does a process's start time tell it from a later one",
)
def test_a_run_stops_the_commands_that_a_killed_run_left_running(tmp_path: Path) -> None:
    # Left running, a command would go on beside its row started again once the lease ran out.
    csv = _one_row(tmp_path)
    pids = tmp_path / "pids"
    command = python_script(tmp_path / "lingers.py", LINGERS)
    argv = [str(CONSOLE_SCRIPT), "run", str(csv), "--lease", "1"]
    first = subprocess.Popen([*argv, "--", *command, str(pids)], stderr=subprocess.DEVNULL)
    try:
        wait_for(pids.exists)
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        first.kill()
        first.wait()
    lingering = [int(pid) for pid in pids.read_text().split()]  # the command and its child
    try:
        assert not any(process_gone(pid) for pid in lingering)  # a kill -9 cannot stop them
        second = subprocess.run(
            [*argv, "--", sys.executable, "-c", "pass"],
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT,
            check=False,
        )
        assert second.returncode == 0, second.stderr
        for pid in lingering:
            wait_for(lambda pid=pid: process_gone(pid), timeout=30)
    finally:  # whatever failed, no process of the test outlives it
        for pid in lingering:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert "leftover_command_stopped" in second.stdout + second.stderr
    assert statuses(csv) == {"1": "COMPLETED"}


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


def test_run_two_columns_of_one_environment_name_the_later_wins(tmp_path: Path) -> None:
    csv = tmp_path / "clash.csv"
    csv.write_text("ID,Order id,ORDER_ID\n1,first,second\n")
    ok(invoke("init", csv, "--key", "ID"))
    out = tmp_path / "env.txt"
    command = python_script(
        tmp_path / "env.py",
        f"import os\nopen({str(out)!r}, 'w').write(os.environ['CSVJ_ORDER_ID'])\n",
    )
    result = invoke("run", csv, "--", *command)
    assert result.exit_code == 0, result.stderr
    assert out.read_text() == "second"  # as the README says: the later column's value


def test_run_success_status(rows8: Path, tmp_path: Path) -> None:
    calls = tmp_path / "calls.log"
    command = python_script(
        tmp_path / "cmd.py", f"import sys\nopen({str(calls)!r}, 'a').write(sys.argv[1] + '\\n')\n"
    )
    before = state_of(tmp_path)
    refused = invoke("run", rows8, "--success-status", "DOWNLOADED", "--", *command, "{ID}")
    assert_error(refused, "--success-status DOWNLOADED", "--terminal COMPLETED,DOWNLOADED")
    assert state_of(tmp_path) == before  # not even a backup
    empty = invoke("run", rows8, "--success-status", " ", "--", *command, "{ID}")
    assert_error(empty, "--success-status is empty")  # (not a --terminal hint, itself refused)
    assert state_of(tmp_path) == before
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
    "option",
    [
        ["--timeout", "nan"],
        ["--timeout", "inf"],
        ["--timeout", "3000000"],
        ["--lease", "inf"],
        ["--lease", "nan"],
        ["--lease", "1e12"],
        ["--grace", "nan"],
        ["--grace", "inf"],
    ],
)
def test_run_refuses_seconds_that_are_not_finite_or_too_many(
    rows8: Path, tmp_path: Path, option: list[str]
) -> None:
    before = state_of(tmp_path)
    assert_error(invoke("run", rows8, *option, "--", "true"), option[0])
    assert state_of(tmp_path) == before


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
        (["SIGHUP"], 300.0, True),  # the terminal closed: stopped as by Ctrl-C
    ],
    ids=["sigint-kill", "sigint-grace", "second-signal", "sighup"],
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
    logged = _json_lines(err_path.read_text())  # JSON lines only, the last one too
    assert proc.returncode == 130, logged
    # as for any command that Ctrl-C stops: "csvjournal: interrupted", as a JSON line here
    assert (logged[-1]["event"], logged[-1]["error"]) == ("command_interrupted", "interrupted")
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


def _disk_full_after(limit: int) -> None:
    """In the child, before it runs: no file may grow past ``limit`` bytes (the write
    fails, as on a full disk, instead of the kernel's SIGXFSZ killing the process)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def test_run_on_a_full_disk_stops_with_one_error_and_loses_nothing(tmp_path: Path) -> None:
    csv = tmp_path / "jobs.csv"
    csv.write_text("ID,X\n" + "".join(f"{n},x\n" for n in range(400)))
    ok(invoke("init", csv, "--key", "ID"))
    journal = Path(f"{csv}.journal")
    command = python_script(
        tmp_path / "fail.py", "import sys\nsys.stderr.write('y' * 3000 + '\\n')\nsys.exit(1)\n"
    )
    limit = journal.stat().st_size + 150_000
    done = subprocess.run(
        [str(CONSOLE_SCRIPT), "run", str(csv), "-j", "4", "--", *command],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        preexec_fn=lambda: _disk_full_after(limit),
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "Exception" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("csvjournal: error: "), done.stderr
    assert f"{journal}: SQLite could not read or write the journal" in last
    # the disk has room again: nothing is lost, nothing half-written
    status = json.loads(ok(invoke("status", csv, "--json")))
    assert status["rows"] == 400
    assert status["counts"].get("FAILED", 0) > 0
    ok(invoke("recover", csv))


def test_a_command_that_leaves_a_background_process_is_done_when_it_exits(
    tmp_path: Path,
) -> None:
    csv = tmp_path / "bg.csv"
    csv.write_text("ID\n1\n")
    ok(invoke("init", csv, "--key", "ID"))
    pid_file = tmp_path / "bg.pid"
    # The background process keeps the command's stderr open for a minute.
    command = ["sh", "-c", f'sleep 60 & echo $! > "{pid_file}"; echo started >&2; exit 0']
    result = invoke("run", csv, "--", *command)
    try:
        assert result.exit_code == 0, result.stderr
        assert statuses(csv) == {"1": "COMPLETED"}
        assert not process_gone(int(pid_file.read_text())), "run waited for it to end"
    finally:
        os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_a_command_ended_by_a_signal_says_which(tmp_path: Path) -> None:
    csv = tmp_path / "sig.csv"
    csv.write_text("ID\n1\n")
    ok(invoke("init", csv, "--key", "ID"))
    result = invoke("run", csv, "--max-attempts", "1", "--", "sh", "-c", "kill -9 $$")
    assert result.exit_code == 1, result.stderr
    (row,) = read_rows(csv)
    assert (row["STATUS"], row["EXIT_CODE"]) == ("FAILED", "-9")
    assert row["ERROR_MESSAGE"] == "killed by signal 9 (SIGKILL)"


def test_an_error_line_longer_than_a_spreadsheet_cell_is_cut_to_fit(tmp_path: Path) -> None:
    csv = tmp_path / "long.csv"
    csv.write_text("ID\n1\n")
    ok(invoke("init", csv, "--key", "ID"))
    command = python_script(
        tmp_path / "long.py", "import sys\nsys.stderr.write('x' * 40_000 + '\\n')\nsys.exit(3)\n"
    )
    result = invoke("run", csv, "--max-attempts", "1", "--", *command)
    assert result.exit_code == 1, result.stderr
    (row,) = read_rows(csv)
    assert row["ERROR_MESSAGE"] == "x" * (EXCEL_MAX_CELL - 1) + "…"


def _one_row(tmp_path: Path) -> Path:
    """t.csv, one row keyed by ID, with its journal."""
    csv = tmp_path / "t.csv"
    csv.write_text("ID\n1\n")
    ok(invoke("init", csv, "--key", "ID"))
    return csv


@pytest.mark.slow
def test_a_timeout_kills_what_the_command_left_that_ignores_sigterm(tmp_path: Path) -> None:
    csv = _one_row(tmp_path)
    pid_file = tmp_path / "stubborn.pid"
    command = f'(trap "" TERM; exec sleep 600) & echo $! > "{pid_file}"; sleep 600'
    result = invoke("run", csv, "--max-attempts", "1", "--timeout", "1", "--", "sh", "-c", command)
    stubborn = int(pid_file.read_text())
    try:
        assert result.exit_code == 1, result.stderr
        assert statuses(csv) == {"1": "FAILED"}
        wait_for(lambda: process_gone(stubborn), timeout=10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stubborn, signal.SIGKILL)


STOPS_ON_TERM = """\
import signal, sys, time
from pathlib import Path

signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a tidy exit, not death by signal
Path(sys.argv[1]).touch()
time.sleep(60)
"""


@pytest.mark.slow
def test_ctrl_c_gives_back_the_row_of_a_command_that_exits_on_sigterm(tmp_path: Path) -> None:
    csv = _one_row(tmp_path)
    started = tmp_path / "started"
    command = python_script(tmp_path / "stops.py", STOPS_ON_TERM)
    argv = [str(CONSOLE_SCRIPT), "run", str(csv), "--max-attempts", "1", "--grace", "0.5"]
    proc = subprocess.Popen([*argv, "--", *command, str(started)], stderr=subprocess.PIPE)
    assert _ctrl_c_once(proc, started.exists) == 130
    assert statuses(csv) == {"1": "PENDING"}  # given back, its one attempt not spent


def _ctrl_c_once(proc: subprocess.Popen[bytes], ready: Callable[[], bool]) -> int:
    """Ctrl-C ``proc`` (a run) once ``ready``; its exit status once it is done."""
    try:
        wait_for(ready)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=SUBPROCESS_TIMEOUT)
    finally:
        proc.kill()
        proc.wait()
    return proc.returncode


TERM_TEST = """\
import signal, sys, time
from pathlib import Path

row, folder = sys.argv[1], Path(sys.argv[2])
if row == "1":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # killed only by SIGKILL, its grace over
else:  # finishes its work tidily when asked to stop: a success
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
(folder / f"started-{row}").touch()
time.sleep(60)
"""


@pytest.mark.slow
def test_ctrl_c_stops_every_command_at_once_and_keeps_a_success(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("ID\n1\n2\n")
    ok(invoke("init", csv, "--key", "ID"))
    command = python_script(tmp_path / "term.py", TERM_TEST)
    argv = [str(CONSOLE_SCRIPT), "run", str(csv), "--workers", "2", "--grace", "0.2"]
    proc = subprocess.Popen([*argv, "--", *command, "{ID}", str(tmp_path)])
    started = [tmp_path / f"started-{n}" for n in (1, 2)]
    assert _ctrl_c_once(proc, lambda: all(path.exists() for path in started)) == 130
    # one stopped by us: given back; one that exited 0 when asked to stop: it succeeded
    assert statuses(csv) == {"1": "PENDING", "2": "COMPLETED"}


def test_rows_whose_attempts_are_used_up_are_said_and_rerun_with_retry_failed(
    rows8: Path, tmp_path: Path
) -> None:
    calls = tmp_path / "calls.log"
    command = python_script(
        tmp_path / "cmd.py",
        "import sys\n"
        f"open({str(calls)!r}, 'a').write(sys.argv[1] + '\\n')\n"
        "sys.exit(sys.argv[1] == '2' and 'not yet')\n",
    )
    assert invoke("run", rows8, "--max-attempts", "1", "--", *command, "{ID}").exit_code == 1
    ok(invoke("record", rows8, "2", "--status", "PENDING"))  # reset by hand
    calls.write_text("")
    second = invoke("run", rows8, "--max-attempts", "1", "--", *command, "{ID}")
    assert second.exit_code == 1
    assert calls.read_text() == ""
    assert second.stdout.splitlines()[-1] == (
        "1 pending rows not run: their attempts are used up (--max-attempts 1);"
        " --retry-failed runs them again"
    )
    third = invoke("run", rows8, "--max-attempts", "1", "--retry-failed", "--", *command, "{ID}")
    assert third.exit_code == 1  # it failed once more
    assert calls.read_text() == "2\n"


def test_a_nul_byte_in_a_value_fails_its_row_and_the_run_goes_on(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_bytes(b"ID,NOTE\n1,a\x00b\n2,ok\n")
    ok(invoke("init", csv, "--key", "ID"))
    done = invoke("run", csv, "--max-attempts", "1", "--", sys.executable, "-c", "", "{ID}")
    assert done.exit_code == 1
    assert "Traceback" not in done.stderr
    assert statuses(csv) == {"1": "FAILED", "2": "COMPLETED"}  # the NUL is in CSVJ_NOTE
    assert "NUL byte" in read_rows(csv)[0]["ERROR_MESSAGE"]


def test_run_key_on_a_csv_that_is_not_there_is_refused_and_makes_nothing(tmp_path: Path) -> None:
    csv = tmp_path / "orderz.csv"  # a typo: an empty job would "succeed" and leave files
    assert_error(invoke("run", csv, "--key", "ID", "--", "true"), "no such file")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("program", ["no-such-program-here", "./nope.sh"])
def test_a_program_that_is_not_there_is_refused_before_any_row_runs(
    tmp_path: Path, program: str
) -> None:
    csv = tmp_path / "jobs.csv"
    csv.write_text("ID\na\nb\n", encoding="utf-8")
    ok(invoke("init", csv, "--key", "ID"))
    before = state_of(tmp_path)
    assert_error(invoke("run", csv, "--", program, "{ID}"), f"cannot run {program!r}")
    assert state_of(tmp_path) == before  # no row failed, no backup taken


def test_a_run_whose_csv_cannot_be_written_says_so_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    csv = tmp_path / "jobs.csv"
    csv.write_text("ID\na\nb\n", encoding="utf-8")
    ok(invoke("init", csv, "--key", "ID"))
    before = csv.read_bytes()
    write_protect(monkeypatch, csv)
    result = invoke("run", csv, "--", "true")
    assert result.stdout.startswith("2 succeeded, 0 failed")  # the work is done and recorded
    assert result.exit_code == 2
    error = result.stderr.splitlines()[-1]
    assert error.startswith("csvjournal: error: the run's records are in the journal, but not")
    assert "write-protected" in error
    assert "tries again" not in error  # nothing does: the command is over
    assert csv.read_bytes() == before
    monkeypatch.undo()
    assert ok(invoke("run", csv, "--", "true")).startswith("0 succeeded")  # nothing runs again
    assert "a,COMPLETED" in csv.read_text(encoding="utf-8")  # ... and the CSV catches up


@pytest.mark.parametrize(
    "options",
    [["--terminal", "COMPLETED,IN_PROGRESS"], ["--success-status", "PENDING"]],
    ids=" ".join,
)
def test_a_status_that_means_not_done_is_neither_success_nor_terminal(
    tmp_path: Path, options: list[str]
) -> None:
    csv = tmp_path / "jobs.csv"
    csv.write_text("ID\na\n", encoding="utf-8")
    ok(invoke("init", csv, "--key", "ID"))
    before = state_of(tmp_path)
    assert_error(invoke("run", csv, *options, "--", "true"), "mean a row is not done")
    assert state_of(tmp_path) == before


@pytest.mark.slow
def test_ctrl_z_stops_the_running_commands_with_the_run_and_fg_goes_on(
    rows8: Path, tmp_path: Path
) -> None:
    # the commands run in sessions of their own: the terminal's SIGTSTP never reaches them
    job = tmp_path / "job.py"
    job.write_text(JOB)
    log = tmp_path / "calls.log"
    argv = [
        str(CONSOLE_SCRIPT), "run", str(rows8), "--workers", "2",
        "--", sys.executable, str(job), "{ID}", str(tmp_path),
    ]  # fmt: skip
    # A process group of its own whose parent is in another group of the session, as a
    # shell's job is: in an orphaned group (this test's own, once whoever started the
    # tests has gone) the kernel discards a Ctrl-Z's stop.
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, process_group=0
    )
    try:

        def hung() -> list[int]:
            lines = log.read_text().splitlines() if log.exists() else []
            return [
                int(s.split()[2])
                for s in lines
                if s.split()[:2] in (["start", "5"], ["start", "6"])
            ]

        wait_for(lambda: len(hung()) == 2)
        proc.send_signal(signal.SIGTSTP)
        wait_for(lambda: stopped(proc.pid) and all(stopped(pid) for pid in hung()))
        proc.send_signal(signal.SIGCONT)  # fg
        wait_for(lambda: not stopped(proc.pid) and not any(stopped(pid) for pid in hung()))
        (tmp_path / "release").touch()
        out, _ = proc.communicate(timeout=SUBPROCESS_TIMEOUT)
    finally:
        proc.kill()
        proc.wait()
        for pid in hung():  # in sessions of their own: a failed test must not leave them
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    assert proc.returncode == 0, out
    assert set(statuses(rows8).values()) == {"COMPLETED"}


@pytest.mark.slow
def test_a_run_stops_when_another_open_leaves_its_success_status_out_of_terminal(
    tmp_path: Path,
) -> None:
    # Its finished rows would be pending again, and their commands run a second time.
    csv = tmp_path / "t.csv"
    csv.write_text("ID\n" + "".join(f"{n}\n" for n in range(10)))
    ok(invoke("init", csv, "--key", "ID"))
    calls = tmp_path / "calls.log"
    body = f"import sys, time\nopen({str(calls)!r}, 'a').write(sys.argv[1] + '\\n')\n"
    command = python_script(tmp_path / "cmd.py", body + "time.sleep(0.3)\n")
    argv = [str(CONSOLE_SCRIPT), "run", str(csv), "--workers", "1", "--", *command, "{ID}"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not calls.exists() or len(calls.read_text().split()) < 3:
            assert time.monotonic() < deadline
            assert proc.poll() is None
            time.sleep(0.05)
        csvjournal.open(csv, terminal={"DONE"}, export=False).close()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, (out, err)
    assert "--success-status COMPLETED: stopped" in err.splitlines()[-1], err
    ran = calls.read_text().split()
    assert len(ran) == len(set(ran)), ran  # no row's command ran twice
