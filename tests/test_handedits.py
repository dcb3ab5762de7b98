"""Hand edits made while an exporter runs: kept, never overwritten, until merged or deleted.

(A hand edit found at open is refused there: see test_exporter.py.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _exporter import exported_rows as _rows
from structlog.testing import capture_logs

import csvjournal
from csvjournal.progress import progress

HAND_ROW = "hand,,\n"  # a row typed in by someone: key, empty status and timestamp


def _edit_in_place(path: Path) -> None:
    with path.open("a", encoding="utf-8", newline="") as file:
        file.write(HAND_ROW)


def _edit_like_an_editor(path: Path) -> None:  # a new file renamed over the old one
    temp = path.with_name("edited.tmp")
    temp.write_bytes(path.read_bytes() + HAND_ROW.encode())
    os.replace(temp, path)


EDITS = {"in place": _edit_in_place, "renamed over": _edit_like_an_editor}


def _flushed(journal: csvjournal.Journal) -> None:
    journal.flush(timeout=10)


@pytest.fixture
def running(csv_path: Path) -> csvjournal.Journal:
    journal = csvjournal.open(csv_path, key="ID")
    journal.record("a", "COMPLETED")
    _flushed(journal)
    return journal


def test_a_save_right_after_an_exports_rename_is_kept(
    running: csvjournal.Journal, csv_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the save lands while the exporter syncs the folder after renaming its file in place:
    # the exporter must not take the saved file for its own and overwrite it next time
    real_fsync, saved, folder = os.fsync, [], csv_path.parent.stat()

    def fsync(fd: int) -> None:
        real_fsync(fd)
        if not saved and os.path.samestat(os.fstat(fd), folder):  # not a backup's folder
            _edit_like_an_editor(csv_path)
            saved.append(csv_path.read_bytes())

    monkeypatch.setattr(os, "fsync", fsync)
    running.record("b", "COMPLETED")
    _flushed(running)
    assert saved
    monkeypatch.setattr(os, "fsync", real_fsync)
    running.record("c", "COMPLETED")
    with pytest.raises(csvjournal.CsvChangedError, match="import --merge"):
        running.flush(timeout=10)
    assert csv_path.read_bytes() == saved[0]
    running.close()


@pytest.mark.parametrize("edit", EDITS.values(), ids=EDITS.keys())
def test_an_edit_made_while_exporting_is_kept_until_merged(
    running: csvjournal.Journal, csv_path: Path, edit: Callable[[Path], None]
) -> None:
    with capture_logs() as logs:
        edit(csv_path)
        edited = csv_path.read_bytes()
        running.record("b", "COMPLETED")
        started = time.monotonic()
        with pytest.raises(csvjournal.CsvChangedError, match="import --merge"):
            running.flush(timeout=10)
        assert time.monotonic() - started < 5  # said at once, not after the timeout
        time.sleep(0.3)
        running.record("c", "COMPLETED")
        time.sleep(0.3)
        assert csv_path.read_bytes() == edited  # never overwritten
    assert [entry["event"] for entry in logs].count("csv_changed_by_hand") == 1
    csvjournal.merge_csv(csv_path)
    _flushed(running)
    rows = _rows(csv_path)
    assert sorted(rows) == ["a", "b", "c", "hand"]  # the edit is in, and nothing is lost
    assert rows["c"]["STATUS"] == "COMPLETED"
    assert running.pending() == ["hand"]
    running.close()


def test_deleting_the_edited_csv_has_it_written_anew(
    running: csvjournal.Journal, csv_path: Path
) -> None:
    _edit_in_place(csv_path)
    running.record("b", "COMPLETED")
    with pytest.raises(csvjournal.CsvChangedError):
        running.flush(timeout=10)
    csv_path.unlink()
    _flushed(running)
    assert sorted(_rows(csv_path)) == ["a", "b"]  # the journal's rows, the edit dropped
    running.record("c", "COMPLETED")
    _flushed(running)  # exporting as before
    assert "c" in _rows(csv_path)
    running.close()


@pytest.mark.parametrize("edit", EDITS.values(), ids=EDITS.keys())
def test_other_handles_learn_of_a_second_save_of_the_edit(
    running: csvjournal.Journal, csv_path: Path, edit: Callable[[Path], None]
) -> None:
    with csvjournal.open(csv_path, export=False) as worker:
        for save in range(2):
            edit(csv_path)
            worker.record(f"w{save}", "COMPLETED")
            with pytest.raises(csvjournal.CsvChangedError, match="import --merge"):
                worker.flush(timeout=10)
            assert progress(worker).csv_edited_by_hand
    running.close()


@pytest.mark.parametrize("edit", EDITS.values(), ids=EDITS.keys())
def test_an_idle_job_finds_an_edit_without_a_commit(
    running: csvjournal.Journal, csv_path: Path, edit: Callable[[Path], None]
) -> None:
    edit(csv_path)
    edited = csv_path.read_bytes()
    deadline = time.monotonic() + 10
    while not progress(running).csv_edited_by_hand:  # found by the exporter, not a commit
        assert time.monotonic() < deadline, "status never saw the edit"
        time.sleep(0.02)
    assert not progress(running).csv_current
    with pytest.raises(csvjournal.CsvChangedError, match="import --merge"):
        running.flush(timeout=10)
    worker = csvjournal.open(csv_path, export=False)
    with pytest.raises(csvjournal.CsvChangedError, match="import --merge"):
        worker.flush(timeout=10)
    worker.close()
    assert csv_path.read_bytes() == edited
    csvjournal.merge_csv(csv_path)
    _flushed(running)  # exporting again, the hand row in the journal
    assert "hand" in _rows(csv_path)
    running.close()


def test_other_handles_learn_of_the_edit_instead_of_waiting(
    running: csvjournal.Journal, csv_path: Path
) -> None:
    worker = csvjournal.open(csv_path, export=False)
    standby = csvjournal.open(csv_path, busy_timeout=30)
    _edit_in_place(csv_path)
    worker.record("w", "COMPLETED")
    deadline = time.monotonic() + 10
    while running._exporter is not None and running._exporter.blocked is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    with pytest.raises(csvjournal.CsvChangedError, match="import --merge"):
        worker.flush(timeout=10)
    started = time.monotonic()
    with capture_logs() as logs:
        standby.close()  # does not wait busy_timeout for an export that cannot come
    assert time.monotonic() - started < 5
    assert any(entry["event"] == "csv_behind_at_close" for entry in logs)
    csv_path.unlink()
    worker.flush(timeout=10)  # the note about the edited file is void once it is gone
    assert "w" in _rows(csv_path)
    worker.close()
    running.close()


def test_a_touched_but_unchanged_csv_goes_on_being_exported(
    running: csvjournal.Journal, csv_path: Path
) -> None:
    os.utime(csv_path, (1_000_000_000, 1_000_000_000))  # a backup tool, `touch`, a copy back
    running.record("b", "COMPLETED")
    _flushed(running)
    assert _rows(csv_path)["b"]["STATUS"] == "COMPLETED"
    running.close()


def test_an_edit_at_close_is_kept_and_refused_at_the_next_open(
    running: csvjournal.Journal, csv_path: Path
) -> None:
    running.record("b", "COMPLETED")
    _edit_in_place(csv_path)
    edited = csv_path.read_bytes()
    running.close()  # its last export would have overwritten the edit
    assert csv_path.read_bytes() == edited
    with pytest.raises(csvjournal.CsvChangedError):
        csvjournal.open(csv_path)


def test_an_open_refused_for_an_edit_leaves_no_file_nor_connection_behind(
    tmp_path: Path,
) -> None:
    # The session's integrity check, begun before the edit was found, opened a connection
    # after the refused open closed its store: kept for good, with the -wal/-shm files.
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("ID,A\n" + "".join(f"{n},x\n" for n in range(20_000)))
    csvjournal.open(csv_path, key="ID").close()
    csv_path.write_text(csv_path.read_text() + "new,y\n")  # edited by hand
    journal = Path(f"{csv_path}.journal")
    for _ in range(5):
        with pytest.raises(csvjournal.CsvChangedError):
            csvjournal.open(csv_path)
        assert not Path(f"{journal}-wal").exists()
        assert not Path(f"{journal}-shm").exists()
        assert _open_here(journal) == []


def _open_here(journal: Path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # (the listing's own descriptor, closed)
            continue
        if target.startswith(str(journal)):
            found.append(target)
    return found


def test_a_merge_while_the_job_runs_keeps_the_records_made_after_the_edit(
    csv_path: Path,
) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        for key in ("x", "y", "z"):
            journal.record(key, NOTE="before")
        _flushed(journal)
        # Someone edits the sheet: a note on x, a status and note on y, a new row.
        text = csv_path.read_text(encoding="utf-8")
        lines = text.splitlines()
        header = lines[0].split(",")
        note, status = header.index("NOTE"), header.index("STATUS")
        edited = []
        for line in lines[1:]:
            cells = line.split(",")
            if cells[0] == "x":
                cells[note] = "fixed by hand"
            if cells[0] == "y":
                cells[note], cells[status] = "hand", "SKIPPED"
            edited.append(",".join(cells))
        new_row = ["hand"] + [""] * (len(header) - 1)
        csv_path.write_text("\n".join([lines[0], *edited, ",".join(new_row)]) + "\n")
        # ... while the job goes on: y fails, z finishes with a new note.
        journal.record("y", "FAILED", NOTE="boom")
        journal.record("z", "COMPLETED", NOTE="after")
        with pytest.raises(csvjournal.CsvChangedError):
            journal.flush(timeout=10)
        report = csvjournal.merge_csv(csv_path)
        _flushed(journal)
        assert report.added == ["hand"]
        assert sorted(report.newer_kept) == ["y", "z"]
        assert report.updated == ["x"]
        rows = _rows(csv_path)
    assert rows["x"]["NOTE"] == "fixed by hand"  # the edit, where nothing newer came
    assert (rows["y"]["STATUS"], rows["y"]["NOTE"]) == ("FAILED", "boom")  # newer than it
    assert (rows["z"]["STATUS"], rows["z"]["NOTE"]) == ("COMPLETED", "after")
    assert "hand" in rows


def test_the_merge_command_in_the_error_is_quoted_for_the_shell(tmp_path: Path) -> None:
    csv = tmp_path / "My Orders.csv"
    csv.write_text("ID\na\n")
    csvjournal.open(csv, key="ID").close()
    csv.write_text(csv.read_text() + "b,,\n")
    with pytest.raises(csvjournal.CsvChangedError) as caught:
        csvjournal.open(csv)
    assert f"`csvjournal import --merge '{csv}'`" in str(caught.value)


def test_a_standby_that_meets_an_edit_at_its_take_over_exports_once_it_is_merged(
    running: csvjournal.Journal, csv_path: Path
) -> None:
    # its thread ended at the edit: after the merge nobody exported, the CSV fell behind
    standby = csvjournal.open(csv_path)
    try:
        assert standby._exporter is not None
        assert not standby._exporter.leading
        _edit_in_place(csv_path)
        with capture_logs() as logs:
            running.close()  # the exporter leaves; the standby's take-over meets the edit
            time.sleep(1.5)
            standby.record("b", "COMPLETED")
            time.sleep(1.0)
        assert not standby._exporter.leading
        assert [entry["event"] for entry in logs].count("csv_changed_by_hand") == 1
        csvjournal.merge_csv(csv_path)
        deadline = time.monotonic() + 5
        while not standby._exporter.leading and time.monotonic() < deadline:
            time.sleep(0.05)
        assert standby._exporter.leading
        standby.record("c", "COMPLETED")
        time.sleep(1.0)  # no flush(): the exporter thread writes it
        assert sorted(_rows(csv_path)) == ["a", "b", "c", "hand"]
        assert progress(standby).csv_current
    finally:
        standby.close()


# -- refused at open or recover: nothing changes -----------------------------------------


def _backups(csv_path: Path) -> list[str]:
    return sorted(path.name for path in Path(f"{csv_path}.backups").iterdir())


@pytest.mark.parametrize(
    "change",
    [{"terminal": {"COMPLETED", "SKIPPED"}}, {"formula_guard": True}],
    ids=["terminal", "formula_guard"],
)
def test_an_open_refused_for_a_hand_edit_changes_no_setting_and_takes_no_backup(
    csv_path: Path, change: dict[str, object]
) -> None:
    csv_path.write_text("ID,F\na,=1+1\nb,x\n", encoding="utf-8")
    csvjournal.open(csv_path, key="ID").close()
    _edit_in_place(csv_path)
    backups = _backups(csv_path)
    with pytest.raises(csvjournal.CsvChangedError, match="import --merge"):
        csvjournal.open(csv_path, **change)  # type: ignore[arg-type]
    assert _backups(csv_path) == backups  # not the backup before a change of settings
    with csvjournal.open(csv_path, export=False) as journal:
        assert journal.settings.terminal == {"COMPLETED"}
        assert journal.settings.formula_guard is False
    assert csv_path.read_text(encoding="utf-8").endswith(HAND_ROW)


def test_recover_refused_for_a_hand_edit_returns_no_lease(csv_path: Path, tmp_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a")
    code = (
        "import csvjournal, os, sys\n"
        "j = csvjournal.open(sys.argv[1], export=False)\n"
        "j.claim(1, lease=0.5, worker='lost-worker')\n"
        "os._exit(0)\n"  # a worker that dies holding its row
    )
    subprocess.run([sys.executable, "-c", code, str(csv_path)], check=True, timeout=120)
    _edit_in_place(csv_path)
    time.sleep(0.6)  # the lease runs out
    with csvjournal.open(csv_path, export=False) as journal:
        with pytest.raises(csvjournal.CsvChangedError, match="import --merge"):
            journal.recover()
        assert journal.get("a")["STATUS"] == "IN_PROGRESS"  # type: ignore[index]
        assert [event.note for event in journal.history("a")][-1] is None  # no expiry event
    assert csv_path.read_text(encoding="utf-8").endswith(HAND_ROW)
