"""The status and pending commands: progress, its JSON, --watch, and the pending rows."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path

import pytest
from _cli import (
    CONSOLE_SCRIPT,
    SUBPROCESS_TIMEOUT,
    assert_error,
    finish,
    invoke,
    ok,
    orders_fixture,  # noqa: F401
    start,
    wait_for,
)
from _exporter import start_exporter

import csvjournal
from csvjournal._values import format_timestamp
from csvjournal.progress import Progress

# -- status ----------------------------------------------------------------------------


def test_status_shows_counts_percent_rate_and_freshness(orders: Path) -> None:
    out = ok(invoke("status", orders))
    assert "PENDING" in out
    assert "0 of 3 rows done (0.0 %), 3 pending, 0 leased to workers" in out
    assert "rate: no rows finished in the last minute; ETA: unknown" in out
    assert "exporter: none running; CSV: current" in out
    ok(invoke("record", orders, "PO-1", "--status", "COMPLETED"))
    ok(invoke("record", orders, "PO-2", "--status", "FAILED"))
    out = ok(invoke("status", orders))
    assert re.search(r"COMPLETED \(done\)\s*│\s*1", out), out
    assert re.search(r"FAILED\s*│\s*1", out), out
    assert "1 of 3 rows done (33.3 %), 2 pending, 0 leased to workers" in out
    assert "rows/s" in out


def test_status_shows_a_rate_under_a_row_a_second_per_minute(orders: Path) -> None:
    ok(invoke("record", orders, "PO-1", "--status", "COMPLETED"))
    # as if it had finished 30 s ago: one row in the last half minute
    then = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)
    with closing(sqlite3.connect(f"{orders}.journal")) as conn, conn:
        conn.execute("UPDATE events SET at = ?", (format_timestamp(then),))
    out = ok(invoke("status", orders))
    assert "rate: 2.0 rows/min; ETA: " in out, out  # not "0.0 rows/s" beside a finite ETA


def test_status_shows_the_commonest_statuses_and_sums_up_the_rest(tmp_path: Path) -> None:
    # Workers recording an error text as the status: a line each, 20,000 lines, 14 s.
    csv_path = tmp_path / "many.csv"
    csv_path.write_text("ID\n" + "".join(f"{n}\n" for n in range(100)))
    with csvjournal.open(csv_path, key="ID") as journal, journal.batch():
        journal.record("0", "COMPLETED")  # 1 row, and PENDING 1 row (99): shown all the same
        for n in range(1, 61):
            journal.record(str(n), f"error {(n + 1) // 2}")  # 30 statuses of 2 rows
        for n in range(61, 99):
            journal.record(str(n), "slow")  # 38 rows
    out = ok(invoke("status", csv_path))
    assert re.search(r"COMPLETED \(done\)\s*│\s*1\b", out), out
    assert re.search(r"PENDING\s*│\s*1\b", out), out
    assert re.search(r"slow\s*│\s*38", out), out
    shown = re.findall(r"error (\d+)\s*│\s*2\b", out)
    assert len(shown) == 21  # 25 lines: COMPLETED, PENDING, slow, 21 errors, the rest summed
    assert re.search(r"\.\.\. 9 more statuses \(--json lists them all\)\s*│\s*18", out), out
    data = json.loads(ok(invoke("status", csv_path, "--json")))
    assert len(data["counts"]) == 33


@pytest.mark.parametrize("status", ["[x]", "[/]", "[bold]DONE[/bold]", "[/]["])
def test_status_shows_statuses_and_paths_as_they_are_not_as_markup(
    tmp_path: Path, status: str
) -> None:
    csv_path = tmp_path / "orders [final] [b].csv"
    csv_path.write_text("ID\n1\n2\n")
    ok(invoke("init", csv_path, "--key", "ID"))
    ok(invoke("record", csv_path, "1", "--status", status))
    out = ok(invoke("status", csv_path))
    assert str(csv_path) in out
    assert re.search(re.escape(status) + r"\s*│\s*1", out), out


_EXPORTER = """
import sys, csvjournal
with csvjournal.open(sys.argv[1]) as journal:
    print("exporting", flush=True)
    sys.stdin.read()
"""


@pytest.mark.parametrize("exporting", [True, False], ids=["exporter", "none"])
def test_status_tells_of_the_exporter_to_a_user_who_may_not_write_its_lock(
    orders: Path, monkeypatch: pytest.MonkeyPatch, exporting: bool
) -> None:
    # an operator who may read another account's job files, not write them
    lock = orders.parent / f"{orders.name}.backups" / "exporter.lock"
    assert lock.exists()
    real_open = os.open

    def read_only(path: str, flags: int, *args: object) -> int:
        if Path(path).name == lock.name and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    exporter = start_exporter(_EXPORTER, orders)
    try:
        if not exporting:
            exporter.communicate("", timeout=SUBPROCESS_TIMEOUT)
        monkeypatch.setattr(os, "open", read_only)
        data = json.loads(ok(invoke("status", orders, "--json")))
        monkeypatch.undo()
        assert data["exporter_alive"] is exporting
    finally:
        exporter.kill()
        exporter.wait()


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
    assert data["csv_exists"] is True
    assert data["csv_edited_by_hand"] is False
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
    assert data["events_behind"] == 1
    assert data["csv_current"] is False


def test_status_counts_the_events_behind_not_the_numbers_an_undone_block_skipped(
    orders: Path,
) -> None:
    with csvjournal.open(orders, export=False) as journal:
        with contextlib.suppress(RuntimeError), journal.batch():
            for n in range(500):
                journal.record(f"PO-{n}", "COMPLETED")
            raise RuntimeError  # undone: its 500 numbers are not given again
        journal.record("PO-1", "COMPLETED")
        assert "CSV: 1 events behind" in ok(invoke("status", orders))
        assert json.loads(ok(invoke("status", orders, "--json")))["events_behind"] == 1


def test_status_watch_and_json_together_are_refused(orders: Path) -> None:
    assert_error(invoke("status", orders, "--watch", "--json"), "--watch and --json")


def test_status_reports_a_deleted_csv_as_missing_until_an_export(orders: Path) -> None:
    ok(invoke("record", orders, "PO-1", "--status", "COMPLETED"))
    exported = orders.read_bytes()
    orders.unlink()
    out = ok(invoke("status", orders))
    assert "CSV: missing" in out
    assert "current" not in out
    data = json.loads(ok(invoke("status", orders, "--json")))
    assert (data["csv_exists"], data["csv_current"]) == (False, False)
    assert data["csv_age_seconds"] is None
    with csvjournal.open(orders, keep_backups=0):  # the next exporting open writes it anew
        pass
    assert orders.read_bytes() == exported
    data = json.loads(ok(invoke("status", orders, "--json")))
    assert (data["csv_exists"], data["csv_current"]) == (True, True)


def test_status_says_when_the_csv_shows_the_other_formula_guard(orders: Path) -> None:
    csvjournal.open(orders, export=False, formula_guard=True).close()  # nobody exports
    out = ok(invoke("status", orders))
    assert "CSV: written with the other formula guard setting" in out
    data = json.loads(ok(invoke("status", orders, "--json")))
    assert (data["csv_current"], data["csv_shows_other_guard"]) == (False, True)
    with csvjournal.open(orders, keep_backups=0):  # the next export shows the guard
        pass
    data = json.loads(ok(invoke("status", orders, "--json")))
    assert (data["csv_current"], data["csv_shows_other_guard"]) == (True, False)


def test_status_says_when_a_hand_edit_stopped_the_exports(orders: Path) -> None:
    with csvjournal.open(orders) as journal:
        width = len(orders.read_text(encoding="utf-8").splitlines()[0].split(","))
        with orders.open("a", encoding="utf-8", newline="") as file:
            file.write("PO-9" + "," * (width - 1) + "\n")  # a row typed in by hand
        journal.record("PO-1", "COMPLETED")
        with pytest.raises(csvjournal.CsvChangedError):
            journal.flush(timeout=10)
        out = ok(invoke("status", orders))
        assert "CSV: edited by hand" in out
        assert "import --merge" in out
        assert json.loads(ok(invoke("status", orders, "--json")))["csv_edited_by_hand"] is True
        ok(invoke("import", orders, "--merge"))
        journal.flush(timeout=10)
        data = json.loads(ok(invoke("status", orders, "--json")))
        assert (data["csv_edited_by_hand"], data["csv_current"]) == (False, True)
        assert journal.get("PO-9") is not None
    assert "PO-9" in orders.read_text(encoding="utf-8")


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


@pytest.mark.parametrize(
    ("key", "line"),
    [
        ("a\nb", "a\\nb"),
        ("a\\nb", "a\\\\nb"),  # a backslash and n: not the line break's line
        ("a\r\nb", "a\\r\\nb"),
        ("a\u2028b", "a\\u2028b"),
        ("tab\there", "tab\\there"),
        ("e\x1b[31mRED", "e\\x1b[31mRED"),  # not the terminal's, nor dropped from a pipe
        ("bel\x07del\x7fnext\x85", "bel\\x07del\\x7fnext\\x85"),
    ],
)
def test_pending_gives_each_key_one_line_and_json_gives_it_exactly(
    tmp_path: Path, key: str, line: str
) -> None:
    csv = tmp_path / "k.csv"
    with csvjournal.open(csv, key="ID") as journal:
        journal.record(key)
        journal.record("plain")
    out = ok(invoke("pending", csv))
    assert out.splitlines() == [line, "plain"]  # `pending | wc -l` counts rows
    assert json.loads(ok(invoke("pending", csv, "--json")))["pending"] == [key, "plain"]


def test_pending_writes_many_keys_each_on_its_line(tmp_path: Path) -> None:
    # (in chunks of lines: an echo a key took a million keys 10 s)
    csv = tmp_path / "k.csv"
    keys = [f"k{n}" if n % 9_999 else f"k{n}\nx" for n in range(25_000)]
    csv.write_text("ID\n" + "".join(f'"{key}"\n' for key in keys))
    ok(invoke("init", csv, "--key", "ID"))
    out = ok(invoke("pending", csv))
    assert out.splitlines() == [key.replace("\n", "\\n") for key in keys]


def _two_rows(tmp_path: Path) -> Path:
    csv = tmp_path / "jobs.csv"
    csv.write_text("ID\n1\n2\n")
    ok(invoke("init", csv, "--key", "ID"))
    return csv


def _watching(csv: Path) -> subprocess.Popen[str]:
    """``status --watch`` of ``csv`` into a pipe (stdout and stderr), refreshed often."""
    return subprocess.Popen(
        [str(CONSOLE_SCRIPT), "status", str(csv), "--watch", "--interval", "0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_status_watch_into_a_pipe_writes_a_snapshot_each_refresh(tmp_path: Path) -> None:
    child = _watching(_two_rows(tmp_path))
    try:
        assert child.stdout is not None
        seen = [child.stdout.readline() for _ in range(40)]  # several snapshots, as they come
        assert sum("0 of 2 rows done" in line for line in seen) >= 2, seen
        child.send_signal(signal.SIGINT)  # the watch ends as any command Ctrl-C stops
        assert child.wait(SUBPROCESS_TIMEOUT) == 130
    finally:
        child.terminate()
        child.wait(SUBPROCESS_TIMEOUT)


def test_status_watch_into_a_pipe_closed_by_its_reader_exits_0(tmp_path: Path) -> None:
    # rich's console exited 1 where `pending | head` exits 0
    child = _watching(_two_rows(tmp_path))
    assert child.stdout is not None
    assert child.stdout.readline()
    child.stdout.close()  # the reader has enough
    assert child.wait(SUBPROCESS_TIMEOUT) == 0
    assert child.stderr is not None
    assert child.stderr.read() == ""


def test_a_restore_goes_ahead_while_status_watches_and_the_watch_follows_it(
    tmp_path: Path,
) -> None:
    # the watch held the journal open from look to look: every restore was refused
    csv = _two_rows(tmp_path)
    backup = ok(invoke("backup", csv)).strip()
    ok(invoke("record", csv, "1", "--status", "COMPLETED"))
    child = _watching(csv)
    try:
        out = child.stdout
        assert out is not None
        wait_for(lambda: "1 of 2 rows done" in out.readline(), timeout=10)
        ok(invoke("restore", csv, backup))
        wait_for(lambda: "0 of 2 rows done" in out.readline(), timeout=10)
        child.send_signal(signal.SIGINT)
        assert child.wait(SUBPROCESS_TIMEOUT) == 130
    finally:
        child.terminate()
        child.wait(SUBPROCESS_TIMEOUT)


@pytest.mark.parametrize("edit", ["longer", "same size"])
def test_status_says_edited_by_hand_with_no_exporter_running(tmp_path: Path, edit: str) -> None:
    csv = tmp_path / "jobs.csv"
    csv.write_text("ID,NOTE\n1,a\n2,b\n")
    ok(invoke("init", csv, "--key", "ID"))
    text = csv.read_text()
    csv.write_text(text.replace("1,a", "1,ab" if edit == "longer" else "1,A"))
    data = json.loads(ok(invoke("status", csv, "--json")))
    assert (data["csv_edited_by_hand"], data["csv_current"]) == (True, False)
    assert "edited by hand" in ok(invoke("status", csv))
    csv.write_text(text)  # the edit undone: the file csvjournal wrote again
    data = json.loads(ok(invoke("status", csv, "--json")))
    assert (data["csv_edited_by_hand"], data["csv_current"]) == (False, True)


def test_interval_without_watch_is_refused(orders: Path) -> None:
    assert_error(invoke("status", orders, "--interval", "5"), "give --watch too")
    assert_error(
        invoke("status", orders, "--watch", "--interval", "abc"), "'abc' is not a number of seconds"
    )
