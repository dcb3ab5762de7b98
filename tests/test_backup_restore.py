"""Restore: round trips, refusals that change nothing, and the backup before a schema upgrade."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from _backup import NAME
from _backup import dump as _dump
from _backup import folder_listing as _folder_listing
from _backup import journal_in as _journal_in
from _backup import record_some as _record_some
from _backup import start as _start
from _backup import stop as _stop
from _children import script as _script
from _children import wait_for_line as _wait_for_line

import csvjournal
from csvjournal import _migrate
from csvjournal._pids import pid_namespace
from csvjournal.backup import check_backup
from csvjournal.csvio import temp_prefix

FIXTURES = Path(__file__).parent / "fixtures"
JOURNAL = "orders.csv.journal"  # the journal of the csv_path fixture

# -- helpers -----------------------------------------------------------------------------


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _revision(journal_path: Path) -> str:
    with closing(sqlite3.connect(journal_path)) as c:
        return str(c.execute("SELECT version_num FROM alembic_version").fetchone()[0])


def _damage(journal_path: Path) -> None:
    """Overwrite a leaf page in the middle of the rows b-tree of a closed journal."""
    with closing(sqlite3.connect(journal_path)) as conn:
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        leaves = [
            n
            for (n,) in conn.execute(
                "SELECT pageno FROM dbstat WHERE name = 'rows' AND pagetype = 'leaf'"
                " ORDER BY pageno"
            )
        ]
    assert len(leaves) >= 5
    with journal_path.open("r+b") as file:
        file.seek((leaves[len(leaves) // 2] - 1) * size)
        file.write(b"\xde\xad\xbe\xef" * (size // 4))


def _csv_keys(path: Path) -> list[str]:
    text = path.read_bytes().decode("utf-8-sig")
    return [row["ID"] for row in csv.DictReader(io.StringIO(text, newline=""))]


# -- restore -----------------------------------------------------------------------------


def test_restore_round_trip(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID", keep_backups=10) as journal:
        _record_some(journal, 0, 300)
        journal.record("k00007", "RETRIED", EXTRA="only before the backup")
        journal.flush(timeout=30)
        backup = journal.backup()
        _record_some(journal, 250, 100)  # changes rows and adds some
        journal.record("k00008", "FAILED", LATER="a column the backup does not know")
    saved = _dump(Path(f"{csv_path}.journal"))
    saved_csv = csv_path.read_bytes()
    with csvjournal.open(csv_path, export=False) as journal:
        before = set(journal.backups())

    safety = csvjournal.restore(csv_path, backup)

    assert safety is not None
    assert NAME.match(safety.name)
    assert safety.parent == backup.parent
    with csvjournal.open(csv_path, export=False) as journal:
        assert set(journal.backups()) == before | {safety}
        assert journal.backups()[-1] == safety
    # the journal is the backed-up one, the CSV byte for byte the backup's copy
    assert _dump(Path(f"{csv_path}.journal")) == _dump(_journal_in(backup))
    assert csv_path.read_bytes() == (backup / "orders.csv").read_bytes()
    assert "LATER" not in csv_path.read_text()
    # the state before the restore is in the safety backup
    assert _dump(_journal_in(safety)) == saved
    assert (safety / "orders.csv").read_bytes() == saved_csv
    assert sorted(p.name for p in csv_path.parent.iterdir()) == [
        "orders.csv",
        "orders.csv.backups",
        "orders.csv.journal",
    ]
    # and the restored journal works on: new records number on from the backup's
    with csvjournal.open(csv_path) as journal:
        last = max(e[0] for e in _dump(_journal_in(backup))["events"])  # type: ignore[type-var]
        assert journal.record("after", "COMPLETED") == last + 1  # type: ignore[operator]
        assert len(journal) == 301
    assert _csv_keys(csv_path)[-1] == "after"
    # restoring the safety backup undoes the restore
    csvjournal.restore(csv_path, safety)
    assert _dump(Path(f"{csv_path}.journal")) == saved
    assert csv_path.read_bytes() == saved_csv


def test_restore_of_the_oldest_backup_survives_retention(csv_path: Path) -> None:
    # Restored, the oldest backup stays too: it was chosen, and may be wanted again.
    with csvjournal.open(csv_path, key="ID", keep_backups=2) as journal:
        journal.record("a", "COMPLETED")
        journal.flush(timeout=30)
        oldest = journal.backup()
        journal.record("b", "COMPLETED")
        journal.backup()
        assert journal.backups()[0] == oldest
    expected = _dump(_journal_in(oldest))
    safety = csvjournal.restore(csv_path, oldest, keep_backups=2)
    assert safety is not None
    assert safety.exists()
    assert _dump(Path(f"{csv_path}.journal")) == expected
    assert _csv_keys(csv_path) == ["a"]
    with csvjournal.open(csv_path, export=False) as journal:
        assert journal.backups()[0] == oldest
        assert len(journal.backups()) == 3  # the newest 2, and the one restored
        assert journal.backups()[-1] == safety
    for _ in range(3):  # later backups and exporting opens: retention still spares it
        with csvjournal.open(csv_path, keep_backups=2) as journal:
            journal.backup()
    assert oldest.exists()
    assert len(csvjournal.open(csv_path, export=False).backups()) == 3


def test_restore_without_a_journal_puts_the_backup_in_place(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a", "COMPLETED", N=1)
        journal.flush(timeout=30)
        backup = journal.backup()
    Path(f"{csv_path}.journal").unlink()
    csv_path.unlink()
    assert csvjournal.restore(csv_path, backup) is None
    assert _dump(Path(f"{csv_path}.journal")) == _dump(_journal_in(backup))
    assert csv_path.read_bytes() == (backup / "orders.csv").read_bytes()


def test_restore_over_a_csv_without_a_journal_keeps_that_csv_first(
    csv_path: Path, tmp_path: Path
) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a", "COMPLETED", N=1)
        journal.flush(timeout=30)
        backup = journal.backup()
    other = tmp_path / "elsewhere" / "orders.csv"  # a sheet of its own, no journal
    other.parent.mkdir()
    other.write_bytes(b"ID,NOTE\n7,made by hand\n")
    safety = csvjournal.restore(other, backup)
    assert safety is not None
    assert (safety / "orders.csv").read_bytes() == b"ID,NOTE\n7,made by hand\n"
    assert other.read_bytes() == (backup / "orders.csv").read_bytes()
    assert _dump(Path(f"{other}.journal")) == _dump(_journal_in(backup))
    for _ in range(3):  # its only copy: retention leaves it alone
        csvjournal.open(other, keep_backups=1).close()
    assert (safety / "orders.csv").read_bytes() == b"ID,NOTE\n7,made by hand\n"


def test_restore_refuses_a_damaged_backup_and_changes_nothing(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        _record_some(journal, 0, 3000)
        journal.flush(timeout=30)
        backup = journal.backup()
        journal.record("later", "COMPLETED")
    _damage(_journal_in(backup))
    journal_path = Path(f"{csv_path}.journal")
    digests = (_digest(journal_path), _digest(csv_path))
    listing = sorted(p.name for p in csv_path.parent.iterdir())
    backups = _folder_listing(csv_path)

    with pytest.raises(csvjournal.JournalCorruptError, match="integrity") as caught:
        csvjournal.restore(csv_path, backup)

    assert isinstance(caught.value, RuntimeError)
    assert str(_journal_in(backup)) in str(caught.value)
    assert (_digest(journal_path), _digest(csv_path)) == digests
    assert sorted(p.name for p in csv_path.parent.iterdir()) == listing
    assert _folder_listing(csv_path) == backups
    with csvjournal.open(csv_path) as journal:
        assert journal.get("later") is not None


def test_restore_refuses_a_folder_that_is_not_a_backup(csv_path: Path, tmp_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a")
    digest = _digest(Path(f"{csv_path}.journal"))
    with pytest.raises(FileNotFoundError):
        csvjournal.restore(csv_path, tmp_path / "nowhere")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "orders.csv.journal").write_bytes(b"not a database at all" * 100)
    with pytest.raises(csvjournal.JournalCorruptError):
        csvjournal.restore(csv_path, tmp_path / "junk")
    assert _digest(Path(f"{csv_path}.journal")) == digest


HOLDER = """
csv_path, report_path, export = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
journal = csvjournal.open(csv_path, export=export)
journal.record("held", "COMPLETED")
journal.flush(timeout=60)
journal._wait_for_session_backup()  # its folder would appear under the test's eyes
with open(report_path, "wb", buffering=0) as report:
    report.write(b"ready\\n")
    time.sleep(600)
"""


@pytest.mark.slow
@pytest.mark.parametrize("export", [True, False], ids=["exporting", "non-exporting"])
def test_restore_is_refused_while_another_process_has_the_journal(
    tmp_path: Path, export: bool
) -> None:
    csv_path = tmp_path / "orders.csv"
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a", "COMPLETED")
        journal.flush(timeout=30)
        backup = journal.backup()
    report, log = tmp_path / "report.txt", tmp_path / "stderr.txt"
    proc = _start(_script(tmp_path, "holder", HOLDER), csv_path, report, int(export), log=log)
    try:
        _wait_for_line(proc, report, "ready", log)
        journal_path = Path(f"{csv_path}.journal")
        state = (_dump(journal_path), csv_path.read_bytes(), _folder_listing(csv_path))
        with pytest.raises(csvjournal.JournalBusyError) as caught:
            csvjournal.restore(csv_path, backup)
        assert isinstance(caught.value, TimeoutError)
        assert str(csv_path) in str(caught.value)
        assert f"(process {proc.pid}: " in str(caught.value)  # who, to stop it
        assert (_dump(journal_path), csv_path.read_bytes(), _folder_listing(csv_path)) == state
        assert proc.poll() is None
    finally:
        _stop(proc)
    # once it is gone, the restore goes ahead
    assert csvjournal.restore(csv_path, backup) is not None
    assert _csv_keys(csv_path) == ["a"]


BRIEF_HOLDER = """
csv_path, report_path = sys.argv[1], sys.argv[2]
journal = csvjournal.open(csv_path, export=False)
journal.get("a")
with open(report_path, "wb", buffering=0) as report:
    report.write(b"ready\\n")
    time.sleep(0.5)  # a look of status --watch, say, if a long one
    journal.close()
    report.write(b"closed\\n")
    time.sleep(600)
"""


@pytest.mark.slow
def test_restore_waits_out_a_process_that_has_the_journal_open_for_a_moment(
    tmp_path: Path,
) -> None:
    csv_path = tmp_path / "orders.csv"
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a", "COMPLETED")
        journal.flush(timeout=30)
        backup = journal.backup()
        journal.record("b")
    report, log = tmp_path / "report.txt", tmp_path / "stderr.txt"
    proc = _start(_script(tmp_path, "brief", BRIEF_HOLDER), csv_path, report, log=log)
    try:
        _wait_for_line(proc, report, "ready", log)
        assert csvjournal.restore(csv_path, backup) is not None  # not refused
        assert "closed" in report.read_text()
        assert _csv_keys(csv_path) == ["a"]
    finally:
        _stop(proc)


@pytest.mark.parametrize("export", [True, False], ids=["exporting", "non-exporting"])
def test_restore_is_refused_while_this_process_has_the_journal_open(
    csv_path: Path, export: bool
) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a", "COMPLETED")
        journal.flush(timeout=30)
        backup = journal.backup()
    with csvjournal.open(csv_path, export=export) as journal:
        journal.record("b", "COMPLETED")
        with pytest.raises(csvjournal.JournalBusyError):
            csvjournal.restore(csv_path, backup)
        # the handle's records still land in the journal
        journal.record("c", "COMPLETED")
    with csvjournal.open(csv_path, export=False) as journal:
        assert [journal.get(k) is not None for k in "abc"] == [True, True, True]


def test_restore_replaces_a_journal_sqlite_cannot_read_and_keeps_its_files(
    tmp_path: Path,
) -> None:
    csv_path = tmp_path / "orders.csv"
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a", "COMPLETED")
        good = journal.backup()
        journal.record("b", "FAILED")
    journal_path = Path(f"{csv_path}.journal")
    damaged = b"not a database any more" + journal_path.read_bytes()[23:]
    journal_path.write_bytes(damaged)
    safety = csvjournal.restore(csv_path, good)
    assert safety is not None
    assert (safety / journal_path.name).read_bytes() == damaged  # kept as it was
    with csvjournal.open(csv_path) as journal:
        assert journal.get("a") is not None
        assert journal.get("b") is None


def test_restore_refuses_the_journals_own_folder(tmp_path: Path) -> None:
    csv_path = tmp_path / "orders.csv"
    csvjournal.open(csv_path, key="ID").close()
    before = Path(f"{csv_path}.journal").read_bytes()
    with pytest.raises(FileNotFoundError, match="own folder"):
        csvjournal.restore(csv_path, tmp_path)
    assert Path(f"{csv_path}.journal").read_bytes() == before


# -- before a schema upgrade -------------------------------------------------------------


@pytest.mark.parametrize("export", [True, False], ids=["exporting", "non-exporting"])
def test_an_old_journal_is_backed_up_before_its_schema_upgrade(
    csv_path: Path, export: bool
) -> None:
    fixture = FIXTURES / "journal-0001.sqlite"
    journal_path = Path(f"{csv_path}.journal")
    shutil.copyfile(fixture, journal_path)
    old = _dump_old(journal_path)  # the copy: reading a WAL file leaves -wal/-shm beside it
    with csvjournal.open(csv_path, export=export) as journal:
        found = journal.backups()
        assert len(found) == (2 if export else 1)  # the upgrade's, then the session's
        upgrade_backup = found[0]
        assert check_backup(upgrade_backup, journal_path.name)
        assert _revision(_journal_in(upgrade_backup)) == "0001"
        assert _dump_old(_journal_in(upgrade_backup)) == old
        if export:
            assert _revision(_journal_in(found[1])) == _migrate.head_revision()
        assert journal.get("PO-1") is not None
    assert _revision(journal_path) == _migrate.head_revision()
    # and that backup restores: the old journal comes back and is upgraded again
    csvjournal.restore(csv_path, upgrade_backup)
    with csvjournal.open(csv_path) as journal:
        assert [e.status for e in journal.history("PO-2")] == ["FAILED", "NO_ATTACHMENTS"]
        assert journal.pending() == ["PO-3"]


@pytest.mark.parametrize("keep", [1, 2])
def test_the_backup_before_an_upgrade_outlives_retention(csv_path: Path, keep: int) -> None:
    # The only way back to the csvjournal that wrote the old schema: the session backups
    # after it must not push it out.
    journal_path = Path(f"{csv_path}.journal")
    shutil.copyfile(FIXTURES / "journal-0003.sqlite", journal_path)
    for _ in range(keep + 2):
        csvjournal.open(csv_path, keep_backups=keep).close()
    with csvjournal.open(csv_path, keep_backups=keep) as journal:
        found = journal.backups()
    assert [_revision(_journal_in(path)) for path in found].count("0003") == 1
    assert len(found) == keep + 1  # the kept one is not counted


def _dump_old(path: Path) -> list[tuple[object, ...]]:
    """Rows and events in a form every revision shares."""
    with closing(sqlite3.connect(path)) as c:
        return [
            *c.execute("SELECT key, status, cells FROM rows ORDER BY pos"),
            *c.execute("SELECT seq, key, status, fields FROM events ORDER BY seq"),
        ]


def test_restore_refuses_a_backup_of_a_newer_schema_and_changes_nothing(
    csv_path: Path, tmp_path: Path
) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a", "COMPLETED")
        backup = journal.backup()
    newer = tmp_path / "newer"
    shutil.copytree(backup, newer)
    with closing(sqlite3.connect(newer / JOURNAL)) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
        conn.commit()
    before = _folder_listing(csv_path)
    journal_bytes = Path(f"{csv_path}.journal").read_bytes()
    with pytest.raises(csvjournal.SchemaTooNewError):
        csvjournal.restore(csv_path, newer)
    assert _folder_listing(csv_path) == before
    assert Path(f"{csv_path}.journal").read_bytes() == journal_bytes


def test_what_killed_backups_and_restores_leave_is_removed(csv_path: Path) -> None:
    csvjournal.open(csv_path, key="ID").close()
    dead = 2**22 + 12345  # no such process
    partial = Path(f"{csv_path}.backups") / f".partial-{dead}-0123456789ab"
    partial.mkdir()
    (partial / JOURNAL).write_bytes(b"half a copy")
    restoring = csv_path.with_name(f".{JOURNAL}.restoring-{dead}")
    restoring.write_bytes(b"half a journal")
    Path(f"{restoring}-journal").write_bytes(b"its rollback journal")
    with csvjournal.open(csv_path, keep_backups=0, export=False) as journal:
        report = journal.recover()
    assert {partial, restoring, Path(f"{restoring}-journal")} <= set(report.temp_files_removed)
    assert not partial.exists()
    assert not restoring.exists()


def test_leftovers_whose_process_number_was_reused_are_removed(csv_path: Path) -> None:
    # Named after a process number that a later process got (here: this test's own,
    # changed days before it started): the writer is gone, they are not kept for good.
    if not Path("/proc/self/stat").exists():
        pytest.skip("when a process started is read from /proc (Linux)")
    csvjournal.open(csv_path, key="ID").close()
    reused = os.getpid()
    partial = Path(f"{csv_path}.backups") / f".partial-{reused}-0123456789ab"
    partial.mkdir()
    (partial / JOURNAL).write_bytes(b"half a copy")
    export = csv_path.with_name(f"{temp_prefix(csv_path)}{reused}-abcd1234")
    export.write_bytes(b"ID,STATUS\nhalf an expo")
    restoring = csv_path.with_name(f".{JOURNAL}.restoring-{reused}")
    restoring.write_bytes(b"half a journal")
    long_ago = time.time() - 10 * 86400
    for leftover in (partial, export, restoring):
        os.utime(leftover, (long_ago, long_ago))
    with csvjournal.open(csv_path, keep_backups=0, export=False) as journal:
        report = journal.recover()
    assert {partial, export, restoring} <= set(report.temp_files_removed)
    assert not partial.exists()
    assert not export.exists()
    fresh = Path(f"{csv_path}.backups") / f".partial-{reused}-fresh0123456"
    fresh.mkdir()  # changed while this process runs: its writer may be at work
    with csvjournal.open(csv_path, keep_backups=0, export=False) as journal:
        assert fresh not in journal.recover().temp_files_removed
    assert fresh.exists()


@pytest.mark.parametrize("minutes_quiet", [1, 11])
def test_leftovers_of_another_pid_namespace_are_kept_while_they_change(
    csv_path: Path, minutes_quiet: int
) -> None:
    # A container sharing the folder: its process numbers name other processes here (or
    # none), so its leftovers go only once they have not changed for ten minutes.
    namespace = pid_namespace()
    if namespace is None:
        pytest.skip("PID namespaces are read from /proc (Linux)")
    csvjournal.open(csv_path, key="ID").close()
    tag = f"4000000.{namespace[1] + 1}"  # a number no process has here
    partial = Path(f"{csv_path}.backups") / f".partial-{tag}-0123456789ab"
    partial.mkdir()
    removing = Path(f"{csv_path}.backups") / f".removing-{tag}-20261201T000000.000000Z"
    removing.mkdir()
    export = csv_path.with_name(f"{temp_prefix(csv_path)}{tag}-abcd1234")
    export.write_bytes(b"ID,STATUS\nhalf an expo")
    restoring = csv_path.with_name(f".{JOURNAL}.restoring-{tag}")
    restoring.write_bytes(b"half a journal")
    ours = csv_path.with_name(f"{temp_prefix(csv_path)}{2**22 + 12345}.{namespace[1]}-ab12")
    ours.write_bytes(b"ID,STATUS\nhalf an expo")  # of this namespace: its writer is gone
    then = time.time() - minutes_quiet * 60
    leftovers = [partial, removing, export, restoring]
    for leftover in leftovers:
        os.utime(leftover, (then, then))
    with csvjournal.open(csv_path, keep_backups=0, export=False) as journal:
        removed = journal.recover().temp_files_removed
    assert ours in removed
    gone = minutes_quiet > 10
    assert set(leftovers) <= set(removed) if gone else not set(leftovers) & set(removed)
    assert all(leftover.exists() != gone for leftover in leftovers)


@pytest.mark.parametrize(
    "name",
    [
        ".partial-99999999999999999999-x",  # no pid: it made os.kill overflow
        ".partial-\u00b2-x",  # a digit to str.isdigit, not to int()
        ".removing-\u0661\u0662-x",  # a digit to int(), not ASCII
        ".partial-junk",
        ".partial-0-x",  # os.kill(0, 0) signals this process's own group
        ".removing-4000000-x",
    ],
)
@pytest.mark.parametrize("kind", ["folder", "file", "link", "dangling link"])
def test_odd_names_among_the_backups_never_stop_a_command(
    csv_path: Path, tmp_path: Path, name: str, kind: str
) -> None:
    csvjournal.open(csv_path, key="ID").close()
    odd = Path(f"{csv_path}.backups") / name
    if kind == "folder":
        odd.mkdir()
    elif kind == "file":
        odd.write_text("x")
    elif kind == "link":
        (tmp_path / "target").write_text("kept")
        odd.symlink_to(tmp_path / "target")
    else:
        odd.symlink_to(tmp_path / "nowhere")
    beside = [
        csv_path.with_name(f".{JOURNAL}.restoring-\u00b2"),
        csv_path.with_name(f"{temp_prefix(csv_path)}\u00b2-x"),
        csv_path.with_name(f"{temp_prefix(csv_path)}99999999999999999999-x"),
    ]
    for path in beside:
        path.mkdir()  # a folder of such a name is never ours: it stays
    with csvjournal.open(csv_path, keep_backups=0, export=False) as journal:
        removed = journal.recover().temp_files_removed
        journal.record("after", "DONE")
    assert odd in removed
    assert not odd.exists()
    assert not odd.is_symlink()
    assert all(path.is_dir() and path not in removed for path in beside)
    if kind == "link":
        assert (tmp_path / "target").read_text() == "kept"


def test_an_exporting_open_removes_them_with_automatic_backups_off(csv_path: Path) -> None:
    csvjournal.open(csv_path, key="ID").close()
    partial = Path(f"{csv_path}.backups") / f".partial-{2**22 + 12345}-0123456789ab"
    partial.mkdir()
    csvjournal.open(csv_path, keep_backups=0).close()
    assert not partial.exists()


def test_a_backups_folder_that_is_a_file_is_refused_clearly(csv_path: Path) -> None:
    csvjournal.open(csv_path, key="ID").close()
    folder = Path(f"{csv_path}.backups")
    shutil.rmtree(folder)
    folder.write_text("x")
    with pytest.raises(csvjournal.SettingsError, match="must be a folder"):
        csvjournal.open(csv_path, export=False)


RECORD_DURING_RESTORE = """\
import sys

import csvjournal

try:
    with csvjournal.open(sys.argv[1], export=False, busy_timeout=3) as journal:
        print("recorded", journal.record("a", "RACED"), flush=True)
except csvjournal.CsvJournalError as exc:
    print("refused", type(exc).__name__, flush=True)
"""


def test_a_record_made_while_a_restore_replaces_the_journal_is_never_lost_silently(
    csv_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a", "COMPLETED")
        backup = journal.backup()
    script = tmp_path / "racer.py"
    script.write_text(RECORD_DURING_RESTORE)
    racers = []
    real = csvjournal._restore._put_in_place

    def racing(source: Path, journal_path: Path, csv: Path) -> None:
        # a worker opens the journal after restore's check that nobody has it open, and
        # records after the safety backup, before the restored journal is in place
        racers.append(
            subprocess.Popen(
                [sys.executable, str(script), str(csv_path)], stdout=subprocess.PIPE, text=True
            )
        )
        time.sleep(1.5)
        real(source, journal_path, csv)

    monkeypatch.setattr(csvjournal._restore, "_put_in_place", racing)
    safety = csvjournal.restore(csv_path, backup)
    (racer,) = racers
    out, _ = racer.communicate(timeout=60)
    assert out.startswith(("recorded", "refused")), out
    if out.startswith("recorded"):  # then it is in the journal restore saved first
        assert safety is not None
        with closing(sqlite3.connect(safety / JOURNAL)) as conn:
            raced = conn.execute("SELECT count(*) FROM events WHERE status = 'RACED'")
            assert raced.fetchone() == (1,)


def test_restore_refuses_a_backup_of_another_job(csv_path: Path, tmp_path: Path) -> None:
    other = tmp_path / "other" / "orders.csv"
    other.parent.mkdir()
    with csvjournal.open(other, key="PO") as journal:
        journal.record("PO-1", "COMPLETED")
        theirs = journal.backup()
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a", "COMPLETED")
    before = _folder_listing(csv_path)
    files = sorted(path.name for path in csv_path.parent.iterdir())
    journal_bytes = Path(f"{csv_path}.journal").read_bytes()
    with pytest.raises(csvjournal.SettingsError, match="another job"):
        csvjournal.restore(csv_path, theirs)
    assert _folder_listing(csv_path) == before
    assert sorted(path.name for path in csv_path.parent.iterdir()) == files  # no -wal/-shm
    assert Path(f"{csv_path}.journal").read_bytes() == journal_bytes
    # a journal too damaged to read its key column: the CSV's header tells (it was restored)
    journal_bytes = b"not a database any more" + journal_bytes[23:]
    Path(f"{csv_path}.journal").write_bytes(journal_bytes)
    with pytest.raises(csvjournal.SettingsError, match=r"another job .*'PO', which"):
        csvjournal.restore(csv_path, theirs)
    assert _folder_listing(csv_path) == before
    assert Path(f"{csv_path}.journal").read_bytes() == journal_bytes


def test_restore_refuses_an_empty_backup_and_changes_nothing(csv_path: Path) -> None:
    # SQLite reads an empty file as an empty database: a bare "no such table" came out,
    # after the state before was backed up (one more backup each try).
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a", "COMPLETED")
        backup = journal.backup()
    _journal_in(backup).write_bytes(b"")
    before = _folder_listing(csv_path)
    files = sorted(path.name for path in csv_path.parent.iterdir())
    with pytest.raises(csvjournal.JournalCorruptError, match="no journal in this file"):
        csvjournal.restore(csv_path, backup)
    assert _folder_listing(csv_path) == before
    assert sorted(path.name for path in csv_path.parent.iterdir()) == files


def test_a_restore_from_a_backup_it_cannot_mark_still_rewrites_the_csv(csv_path: Path) -> None:
    # The mark that keeps a restored backup from retention could not be written (a
    # read-only copy; here a folder in the mark's place): the restore raised after the
    # journal was replaced, and left the CSV showing the state before.
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a", "COMPLETED")
        backup = journal.backup()
        journal.record("a", "FAILED")
    (backup / ".kept").mkdir()
    csvjournal.restore(csv_path, backup)
    assert "a,COMPLETED" in csv_path.read_text()
    with csvjournal.open(csv_path) as journal:
        assert journal.get("a")["STATUS"] == "COMPLETED"  # type: ignore[index]


@pytest.mark.slow
def test_a_symlinked_journal_records_and_restores_through_its_link(tmp_path: Path) -> None:
    # SQLite keeps the -wal/-shm beside the file the link points to: a record's fsync of
    # "<link>-wal" failed after its commit, and a restore saw no process holding the
    # journal (it looked for "<link>-shm") and replaced the link with a file
    csv_path = tmp_path / "orders.csv"
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a", "COMPLETED")
        backup = journal.backup()
    fast = tmp_path / "fast"
    fast.mkdir()
    Path(f"{csv_path}.journal").rename(fast / "j.journal")
    Path(f"{csv_path}.journal").symlink_to(fast / "j.journal")
    with csvjournal.open(csv_path) as journal:
        journal.record("b", "COMPLETED")
        journal.flush(timeout=30)
    report, log = tmp_path / "report.txt", tmp_path / "stderr.txt"
    proc = _start(_script(tmp_path, "holder", HOLDER), csv_path, report, 0, log=log)
    try:
        _wait_for_line(proc, report, "ready", log)
        with pytest.raises(csvjournal.JournalBusyError, match="has the journal open"):
            csvjournal.restore(csv_path, backup)
    finally:
        _stop(proc)
    assert csvjournal.restore(csv_path, backup) is not None
    assert Path(f"{csv_path}.journal").is_symlink()  # the file it points to was replaced
    with csvjournal.open(csv_path) as journal:
        assert journal.counts() == {"COMPLETED": 1}
