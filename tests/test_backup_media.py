"""Restoring from a journal copy on read-only media: a real read-only file system (a tmpfs
mounted here, then made read-only), where SQLite cannot make the -shm file a copy in WAL
mode needs to be read in place."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import csvjournal
from csvjournal.backup import check_backup


@pytest.fixture
def media(tmp_path: Path) -> Iterator[tuple[Path, Callable[[], None]]]:
    """A folder on a file system of its own, and what makes that file system read-only."""
    folder = tmp_path / "media"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"mounting a file system needs root here: {mounted.stderr.decode().strip()}")

    def read_only() -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)

    try:
        yield folder, read_only
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy_by_hand(csv_path: Path, into: Path, *suffixes: str) -> Path:
    """Copy the job's files as a user would (cp), not through backup()."""
    into.mkdir()
    for suffix in ("", ".journal", *suffixes):
        shutil.copyfile(f"{csv_path}{suffix}", into / f"{csv_path.name}{suffix}")
    return into


@pytest.mark.parametrize(
    "beside",
    [(), ("-shm",), ("-shm", "-wal")],
    ids=["alone", "a stale -shm", "a stale -shm and a -wal with no commit"],
)
def test_a_copy_in_wal_mode_on_read_only_media_restores(
    csv_path: Path, media: tuple[Path, Callable[[], None]], beside: tuple[str, ...]
) -> None:
    folder, read_only = media
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a", "COMPLETED")
        shm = Path(f"{journal.journal_path}-shm").read_bytes()
        wal_header = Path(f"{journal.journal_path}-wal").read_bytes()[:32]
    copy = _copy_by_hand(csv_path, folder / "copy")  # closed: one file, still in WAL mode
    assert (copy / "orders.csv.journal").read_bytes()[18:20] == b"\x02\x02"
    for suffix in beside:  # what a copy taken while the job ran may hold beside it
        (copy / f"orders.csv.journal{suffix}").write_bytes(shm if suffix == "-shm" else wal_header)
    with csvjournal.open(csv_path) as journal:
        journal.record("a", "FAILED")
        journal.record("b", "COMPLETED")
    read_only()
    assert check_backup(copy, "orders.csv.journal") == copy / "orders.csv.journal"
    safety = csvjournal.restore(csv_path, copy)
    assert safety is not None  # the state before is kept
    with csvjournal.open(csv_path) as journal:
        assert journal.get("a")["STATUS"] == "COMPLETED"  # type: ignore[index]
        assert journal.get("b") is None
    assert "a,COMPLETED" in csv_path.read_text()
    expected = ["orders.csv", "orders.csv.journal", *(f"orders.csv.journal{s}" for s in beside)]
    assert sorted(p.name for p in copy.iterdir()) == sorted(expected)


def test_a_copy_whose_wal_holds_commits_on_read_only_media_is_refused_clearly(
    csv_path: Path, media: tuple[Path, Callable[[], None]]
) -> None:
    folder, read_only = media
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a", "COMPLETED")
        journal.flush()
        copy = _copy_by_hand(csv_path, folder / "copy", ".journal-wal")  # open: commits there
        journal.record("a", "FAILED")
    assert (copy / "orders.csv.journal-wal").stat().st_size > 32
    read_only()
    before = _digest(Path(f"{csv_path}.journal"))
    with pytest.raises(csvjournal.JournalIOError, match="copy the folder somewhere writable"):
        csvjournal.restore(csv_path, copy)
    assert _digest(Path(f"{csv_path}.journal")) == before  # nothing changed
    with csvjournal.open(csv_path) as journal:
        assert journal.get("a")["STATUS"] == "FAILED"  # type: ignore[index]
