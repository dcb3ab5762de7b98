"""Atomic replacement of files: through symbolic links, with the right permissions, and
leftovers found by their exact names."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from _exporter import write_protect
from click.testing import CliRunner

import csvjournal
from csvjournal._atomicfile import _umask, atomic_write, remove_temp_files, temp_prefix
from csvjournal.cli import cli


def test_a_symlinked_csv_keeps_its_link_and_its_target_shows_the_records(
    tmp_path: Path,
) -> None:
    (tmp_path / "shared").mkdir()
    target = tmp_path / "shared" / "orders.csv"
    target.write_text("ID\na\nb\n")
    link = tmp_path / "orders.csv"
    link.symlink_to(target)
    with csvjournal.open(link, key="ID") as journal:
        journal.record("a", "COMPLETED")
    with csvjournal.open(link) as journal:  # not "edited by hand"
        journal.record("b", "FAILED")
        journal.export(tmp_path / "copy.csv")
    assert link.is_symlink()
    assert "a,COMPLETED" in target.read_text()
    assert "b,FAILED" in target.read_text()
    assert sorted(path.name for path in (tmp_path / "shared").iterdir()) == ["orders.csv"]


def test_a_link_to_a_csv_with_a_journal_gets_no_second_journal(tmp_path: Path) -> None:
    target = tmp_path / "orders.csv"
    target.write_text("ID\na\n")
    with csvjournal.open(target, key="ID") as journal:
        journal.record("a", "COMPLETED")
    (tmp_path / "link").mkdir()
    link = tmp_path / "link" / "orders.csv"
    link.symlink_to(target)
    before = target.read_bytes()
    with pytest.raises(csvjournal.SettingsError, match=r"has its own journal .*: open "):
        csvjournal.open(link, key="ID")
    assert sorted(path.name for path in (tmp_path / "link").iterdir()) == ["orders.csv"]
    assert target.read_bytes() == before
    elsewhere = tmp_path / "link" / "mine.journal"
    with csvjournal.open(link, key="ID", journal_path=elsewhere) as journal:  # chosen
        assert journal.get("a") is not None


def test_the_cli_on_a_link_to_a_csv_with_a_journal_names_the_file_to_use(tmp_path: Path) -> None:
    target = tmp_path / "orders.csv"
    target.write_text("ID\na\n")
    csvjournal.open(target, key="ID").close()
    (tmp_path / "link").mkdir()
    link = tmp_path / "link" / "orders.csv"
    link.symlink_to(target)
    result = CliRunner().invoke(cli, ["status", str(link)])
    assert result.exit_code == 2
    assert result.stderr == (
        f"csvjournal: error: no journal for {link}, a link to {target}, which has one:"
        f" use {target}\n"
    )


def test_an_export_to_a_symlink_writes_its_target(tmp_path: Path) -> None:
    target = tmp_path / "real.csv"
    target.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    atomic_write(link, b"new\n")
    assert link.is_symlink()
    assert target.read_bytes() == b"new\n"


@pytest.mark.parametrize("name", ["q[1].csv", "sales*.csv", "a?.csv"])
def test_leftovers_are_found_by_their_exact_name(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    ours = tmp_path / f"{temp_prefix(path)}abc123"
    ours.write_text("left by a killed export")
    # another job's export in flight, whose name the pattern would match if unescaped
    theirs = tmp_path / f"{temp_prefix(tmp_path / 'sales-2026.csv')}xyz"
    theirs.write_text("being written")
    q1 = tmp_path / f"{temp_prefix(tmp_path / 'q1.csv')}xyz"
    q1.write_text("being written")
    assert remove_temp_files(path) == [ours]
    assert theirs.exists()
    assert q1.exists()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002], ids=oct)
def test_a_new_file_gets_0666_less_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        assert _umask() == umask
        atomic_write(tmp_path / "new.csv", b"x\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.csv").stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o644], ids=oct)
def test_a_replaced_file_keeps_its_mode(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "old.csv"
    path.write_text("old\n")
    path.chmod(mode)
    atomic_write(path, b"new\n")
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert path.read_bytes() == b"new\n"


def test_a_write_protected_file_is_replaced_only_by_a_user_who_may_write_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.csv"
    path.write_text("old\n")
    path.chmod(0o444)
    if os.access(path, os.W_OK):  # root may write it: as `cp` would, the file is replaced
        atomic_write(path, b"new\n")
        assert path.read_bytes() == b"new\n"
        assert stat.S_IMODE(path.stat().st_mode) == 0o444
    else:
        with pytest.raises(PermissionError, match="write-protected"):
            atomic_write(path, b"new\n")
        assert path.read_bytes() == b"old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["old.csv"]  # no temp file left


def test_a_csv_this_user_may_not_write_is_left_as_it_is_and_flush_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    csv_path = tmp_path / "orders.csv"
    csv_path.write_text("ID\na\n")
    with csvjournal.open(csv_path, key="ID") as journal:
        before = csv_path.read_bytes()
        write_protect(monkeypatch, csv_path)
        journal.record("a", "COMPLETED")
        with pytest.raises(csvjournal.ExportError, match="write-protected"):
            journal.flush(timeout=10)
        assert csv_path.read_bytes() == before
        monkeypatch.undo()  # made writable: the exporter catches up
        journal.flush(timeout=10)
    assert "a,COMPLETED" in csv_path.read_text()


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o444, 0o755], ids=oct)
def test_the_journal_and_backups_of_a_csv_are_as_private_as_the_csv(
    tmp_path: Path, mode: int
) -> None:
    csv_path = tmp_path / "orders.csv"
    csv_path.write_text("ID\na\n")
    csv_path.chmod(mode)
    expected = mode & 0o666 | 0o600  # never executable; its owner writes the journal
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a", "COMPLETED")
        backup = journal.backup()
        assert stat.S_IMODE(Path(f"{csv_path}.journal-wal").stat().st_mode) == expected
    journal_path = Path(f"{csv_path}.journal")
    assert stat.S_IMODE(journal_path.stat().st_mode) == expected
    for copy in (backup / journal_path.name, backup / csv_path.name):
        assert stat.S_IMODE(copy.stat().st_mode) & 0o077 == expected & 0o077, copy
    csvjournal.restore(csv_path, backup)
    assert stat.S_IMODE(journal_path.stat().st_mode) == expected


def test_an_export_to_a_path_removes_what_killed_exports_to_it_left(tmp_path: Path) -> None:
    copy = tmp_path / "out" / "copy.csv"
    copy.parent.mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    killed = copy.parent / f"{temp_prefix(copy)}{int(dead.stdout)}-abcd1234"
    running = copy.parent / f"{temp_prefix(copy)}{os.getpid()}-efgh5678"  # being written
    for leftover in (killed, running):
        leftover.write_text("half an export")
    with csvjournal.open(tmp_path / "orders.csv", key="ID") as journal:
        journal.record("a", "COMPLETED")
        journal.export(copy)
    assert not killed.exists()
    assert running.exists()
    assert "a,COMPLETED" in copy.read_text()


@pytest.mark.parametrize("relative", [True, False], ids=["relative link", "absolute link"])
def test_a_symlinked_csv_is_backed_up_as_the_file_it_points_at(
    tmp_path: Path, relative: bool
) -> None:
    (tmp_path / "shared").mkdir()
    target = tmp_path / "shared" / "orders.csv"
    target.write_text("ID\na\n")
    link = tmp_path / "orders.csv"
    link.symlink_to(Path("shared", "orders.csv") if relative else target)
    with csvjournal.open(link, key="ID") as journal:
        journal.record("a", "COMPLETED")
        journal.flush(timeout=10)
        backup = journal.backup()
    copy = backup / "orders.csv"
    assert not copy.is_symlink()
    assert copy.read_bytes() == target.read_bytes()


def _other_ids() -> tuple[int, int]:
    """An owner and a group other than this process's, that it may give files: root may
    give any; another user only a group of its own (then the owner stays its own)."""
    if os.geteuid() == 0:
        return 4321, 8765
    others = [gid for gid in os.getgroups() if gid != os.getegid()]
    if not others:
        pytest.skip("this machine's test user belongs to no second group to give files")
    return os.geteuid(), others[0]


def test_a_csv_shared_with_a_group_keeps_its_owner_and_group_through_exports(
    tmp_path: Path,
) -> None:
    uid, gid = _other_ids()
    csv_path = tmp_path / "orders.csv"
    csv_path.write_text("ID\na\n")
    os.chown(csv_path, uid, gid)
    csv_path.chmod(0o640)  # the group reads it: after an export too
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a", "COMPLETED")
        journal.flush(timeout=10)
        backup = journal.backup()
    assert "a,COMPLETED" in csv_path.read_text()
    journal_path = Path(f"{csv_path}.journal")
    for path in (csv_path, journal_path, backup / csv_path.name, backup / journal_path.name):
        found = path.stat()
        assert (found.st_uid, found.st_gid) == (uid, gid), path
    assert stat.S_IMODE(csv_path.stat().st_mode) == 0o640


@pytest.mark.parametrize(
    ("mode", "cut"), [(0o640, 0o600), (0o664, 0o644), (0o660, 0o600), (0o604, 0o644)], ids=oct
)
@pytest.mark.parametrize("member", [True, False], ids=["member", "not-member"])
def test_the_owner_is_kept_as_far_as_the_user_may_and_a_group_not_kept_gets_no_more_than_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: int, cut: int, member: bool
) -> None:
    # as for a user who is not root: the system refuses another owner, and another group
    # unless the user is a member of it (then it stays the user's own group, which must
    # not get what the CSV's group had)
    _, gid = _other_ids()
    path = tmp_path / "old.csv"
    path.write_text("old\n")
    os.chown(path, -1, gid)
    path.chmod(mode)
    real_chown = os.chown

    def chown(target: str, uid: int, group: int) -> None:
        if uid != -1:  # EINVAL: root of a user namespace, the owner not mapped into it
            raise (PermissionError(1, "Not permitted") if member else OSError(22, "Invalid"))
        if not member:
            raise PermissionError(1, "Operation not permitted", target)
        real_chown(target, uid, group)

    monkeypatch.setattr(os, "chown", chown)
    atomic_write(path, b"new\n")
    monkeypatch.undo()
    assert path.read_bytes() == b"new\n"
    assert stat.S_IMODE(path.stat().st_mode) == (mode if member else cut)
    assert (path.stat().st_gid == gid) is member
    assert [p.name for p in tmp_path.iterdir()] == ["old.csv"]


@pytest.mark.parametrize(("mode", "folder_mode"), [(0o664, 0o775), (0o640, 0o750), (0o600, 0o700)])
def test_the_backups_and_lock_files_are_as_shared_as_the_csv(
    tmp_path: Path, mode: int, folder_mode: int
) -> None:
    # a group that may write the CSV may export it; the CSV's owner prunes its backups
    uid, gid = _other_ids()
    csv_path = tmp_path / "orders.csv"
    csv_path.write_text("ID\na\n")
    os.chown(csv_path, uid, gid)
    csv_path.chmod(mode)
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a", "COMPLETED")
        backup = journal.backup()
    folder = tmp_path / "orders.csv.backups"
    for path, expected in [
        (folder, folder_mode),
        (backup, folder_mode),
        (folder / "exporter.lock", mode),
        (folder / "writer.lock", mode),
    ]:
        found = path.stat()
        assert (found.st_uid, found.st_gid) == (uid, gid), path
        assert stat.S_IMODE(found.st_mode) == expected, path
