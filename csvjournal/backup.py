"""Backups: consistent copies of a journal and its CSV in ``orders.csv.backups/<UTC time>/``.

The journal is copied with SQLite's online backup API in one step, inside one read
transaction, so the copy is the journal as of one commit even while workers record (in WAL
mode they go on writing meanwhile); a live database is never copied as a file. The copy is
switched to a plain rollback-journal file so it is one self-contained file. The CSV is copied
as it is on disk. A backup is written into a hidden folder of its own process and renamed
into place when whole, so a backup killed half-way is never mistaken for one; a backup that
retention drops is first renamed out of sight, then deleted, so a prune killed half-way
leaves no half a backup either. The next backup removes such leftovers once the process
that made them is gone (never one another process is still writing). Folder names are UTC
times to the microsecond, chosen when the backup is whole, and sort by time.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
import secrets
import shlex
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from csvjournal._atomicfile import copy_file, create_like, make_folder_like
from csvjournal._fsinfo import companion, wal_written
from csvjournal._pids import owner_tag, tag_alive
from csvjournal._schema import peek
from csvjournal.errors import BackupNotFoundError, JournalCorruptError, JournalIOError

__all__ = [
    "PendingBackup",
    "backups_folder",
    "brief",
    "check_backup",
    "copy_journal",
    "copy_uri",
    "keep_for_good",
    "list_backups",
    "newest_backup_hint",
    "prune_backups",
    "read_copy",
    "remove_leftovers",
    "take_backup",
]

log = structlog.get_logger(__name__)

_NAME = re.compile(r"^\d{8}T\d{6}\.\d{6}Z$")
_FORMAT = "%Y%m%dT%H%M%S.%fZ"
# hidden work folders: ".partial-<pid>-<token>" (being written), ".removing-<pid>-<name>"
_PARTIAL = ".partial-"
_REMOVING = ".removing-"
_LEFTOVER = re.compile(r"^\.(?:partial|removing)-(?:([0-9]+(?:\.[0-9]+)?)-)?")  # owner tag
_NAME_ATTEMPTS = 1000
_BRIEF = 300  # characters of SQLite's integrity findings in a message
_KEPT = ".kept"  # in a backup folder: never deleted by retention (see keep_for_good)


def backups_folder(csv_path: Path) -> Path:
    """The folder holding the backups of ``csv_path``'s journal."""
    return Path(f"{csv_path}.backups")


def list_backups(csv_path: Path) -> list[Path]:
    """Every whole backup of ``csv_path``'s journal, oldest first."""
    folder = backups_folder(csv_path)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name) and p.is_dir())


def newest_backup_hint(csv_path: Path, journal: Path | None = None) -> str:
    """A sentence telling the user which backup to restore, for error messages: the
    newest that passes the integrity check (a backup taken of a journal already damaged in
    a way ``quick_check`` misses does not). A journal elsewhere than beside its CSV (an
    open's ``journal_path=``) is restored in Python: the command line finds only those."""
    default = Path(f"{csv_path}.journal")
    journal = journal or default
    found = list_backups(csv_path)
    for backup in reversed(found):
        try:
            check_backup(backup, journal.name)
        except (OSError, JournalCorruptError):
            continue
        newest = "newest" if backup == found[-1] else "newest sound"
        if os.path.abspath(journal) == os.path.abspath(default):
            command = shlex.join(["csvjournal", "restore", str(csv_path), str(backup)])
            return f"restore the {newest} backup: {command}"
        call = (
            f"csvjournal.restore({str(csv_path)!r}, {str(backup)!r}, journal_path={str(journal)!r})"
        )
        return f"restore the {newest} backup, in Python: {call}"
    if found:
        return f"no backup of {csv_path} passes the integrity check ({len(found)} found)"
    return f"no backup of {csv_path} exists"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_journal(source: sqlite3.Connection, target: Path, like: Path) -> None:
    """Copy the database of ``source`` into the new file ``target`` (one read transaction,
    so the copy is consistent), as a rollback-journal database, synced to disk, with the
    permissions of the file ``like``."""
    create_like(target, like)
    copy = sqlite3.connect(target)
    try:
        source.backup(copy)  # all pages in one step: a concurrent writer cannot restart it
        copy.execute("PRAGMA journal_mode = DELETE")
    finally:
        copy.close()
    _fsync(target)


def _new_name(csv_path: Path) -> str:
    stamp = datetime.now(UTC)
    existing = list_backups(csv_path)
    if existing:  # a clock that stepped back, or two backups in one microsecond
        newest = datetime.strptime(existing[-1].name, _FORMAT).replace(tzinfo=UTC)
        stamp = max(stamp, newest + timedelta(microseconds=1))
    return stamp.strftime(_FORMAT)


def remove_leftovers(csv_path: Path, journal_path: Path) -> list[Path]:
    """Delete what backups, prunes and restores killed half-way left behind (their process
    is gone): hidden work folders beside the backups, a restore's temporary journal beside
    the journal. Return what was removed."""
    removed = []
    folder = backups_folder(csv_path)
    if folder.is_dir():
        removed += _remove_leftovers(folder)
    prefix = f".{journal_path.name}.restoring-"
    for leftover in journal_path.parent.glob(f"{glob.escape(prefix)}*"):
        tag = leftover.name[len(prefix) :].removesuffix("-journal")
        if not tag_alive(tag, leftover):  # (a name without a tag: an older one's, or junk)
            with contextlib.suppress(OSError):  # (a folder of that name: not ours)
                leftover.unlink()
            if not os.path.lexists(leftover):
                removed.append(leftover)
    return removed


def _remove_leftovers(folder: Path) -> list[Path]:
    """Delete the hidden work folders of backups and prunes whose process is gone."""
    removed = []
    for leftover in folder.iterdir():
        found = _LEFTOVER.match(leftover.name)
        if found is None or (found.group(1) is not None and tag_alive(found.group(1), leftover)):
            continue
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:  # (a file or link of that name: ours never are, yet it goes too)
            with contextlib.suppress(OSError):
                leftover.unlink()
        if not os.path.lexists(leftover):  # (what could not be removed is not said to be)
            removed.append(leftover)
    return removed


def _rename_into_place(partial: Path, csv_path: Path) -> Path:
    """Rename the whole backup ``partial`` to a new name that sorts after every backup."""
    for _ in range(_NAME_ATTEMPTS):
        final = partial.parent / _new_name(csv_path)
        try:
            os.rename(partial, final)
        except OSError as exc:  # another process took that name first: take the next
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            continue
        return final
    raise OSError(errno.EEXIST, f"{partial.parent}: found no free backup name")


class PendingBackup:
    """A backup begun: its hidden folder already holds the CSV as it was when begun; the
    journal goes in at :meth:`finish` (which may run in another thread, later)."""

    def __init__(self, csv_path: Path) -> None:
        self.csv_path = csv_path
        folder = backups_folder(csv_path)
        make_folder_like(folder, csv_path)  # as shared as the CSV: its owner prunes it
        _remove_leftovers(folder)
        self.partial = folder / f"{_PARTIAL}{owner_tag()}-{secrets.token_hex(6)}"
        make_folder_like(self.partial, csv_path, exist_ok=False)
        self._linked = False
        try:
            if csv_path.exists():  # a symlinked CSV: the file it points at
                self._hold_csv(Path(os.path.realpath(csv_path)), self.partial / csv_path.name)
        except BaseException:
            self.abandon()
            raise

    def _hold_csv(self, csv_path: Path, target: Path) -> None:
        # A hard link holds the CSV as it is now at no cost (the exporter only ever renames
        # a new file over it); the backup gets its own copy later, in finish(), off the
        # path of the open that began it.
        try:
            os.link(csv_path, target)
            self._linked = True
        except OSError:  # a file system without hard links
            copy_file(csv_path, target)

    def _own_csv(self) -> None:
        """Replace the hard-linked CSV by a copy of its own (an edit of the CSV in place,
        later, must not reach the backup)."""
        if not self._linked:
            return
        linked = self.partial / self.csv_path.name
        copy = linked.with_name(f"{linked.name}.copy")
        copy_file(linked, copy)
        os.replace(copy, linked)
        self._linked = False

    def finish(
        self, journal_path: Path, *, keep: int, busy_timeout: float, verify: bool = True
    ) -> Path:
        """Copy the journal in, put the backup in place, keep the newest ``keep`` backups
        (all when ``keep`` is 0); return the backup's folder. With ``verify``, a copy that
        fails SQLite's integrity check is not kept: a damaged backup would push sound ones
        out of retention.

        Raises:
            JournalCorruptError: the journal is damaged (nothing is kept).
            OSError: the backup could not be written (nothing half-written is left).
            sqlite3.Error: the journal could not be read.
        """
        partial = self.partial
        try:
            self._own_csv()
            source = sqlite3.connect(journal_path, timeout=busy_timeout)
            try:
                copy_journal(source, partial / journal_path.name, journal_path)
            finally:
                source.close()
            if verify:
                try:
                    check_backup(partial, journal_path.name)
                except JournalCorruptError as exc:
                    raise JournalCorruptError(
                        f"{journal_path}: the journal fails SQLite's integrity check, so it is"
                        " not backed up (a damaged backup would push sound ones out);"
                        f" {newest_backup_hint(self.csv_path, journal_path)}"
                    ) from exc
        except BaseException:
            self.abandon()
            raise
        final = self._seal("backup_taken")
        prune_backups(self.csv_path, keep)
        return final

    def finish_as_files(self, journal_path: Path) -> Path:
        """Like :meth:`finish`, but copy the journal's files byte for byte (with its -wal):
        for a journal SQLite cannot read any more, and only while nobody has it open.

        Raises:
            OSError: the backup could not be written (nothing half-written is left).
        """
        partial = self.partial
        try:
            self._own_csv()
            for suffix in ("", "-wal"):
                source = companion(journal_path, suffix)
                if source.exists():
                    copy_file(source, partial / f"{journal_path.name}{suffix}")
        except BaseException:
            self.abandon()
            raise
        return self._seal("backup_taken_as_files")

    def _seal(self, event: str) -> Path:
        """Sync the whole backup and rename it into place under a new name."""
        try:
            _fsync(self.partial)
            final = _rename_into_place(self.partial, self.csv_path)
            _fsync(final.parent)
        except BaseException:
            self.abandon()
            raise
        log.info(event, path=str(final))
        return final

    def abandon(self) -> None:
        """Remove what was begun."""
        shutil.rmtree(self.partial, ignore_errors=True)


def take_backup(
    csv_path: Path, journal_path: Path, *, keep: int, busy_timeout: float, verify: bool = True
) -> Path:
    """Back up the CSV and the journal into a new folder; keep the newest ``keep`` backups
    (all when ``keep`` is 0). Return the new folder.

    Raises:
        JournalCorruptError: with ``verify``, the journal is damaged (nothing is kept).
        OSError: the backup could not be written (nothing half-written is left).
        sqlite3.Error: the journal could not be read.
    """
    begun = PendingBackup(csv_path)
    return begun.finish(journal_path, keep=keep, busy_timeout=busy_timeout, verify=verify)


def keep_for_good(backup: Path, why: str = "restored") -> None:
    """Mark ``backup`` (one restored, or the last of an older schema) as kept: retention
    never deletes it, nor counts it. ``why`` is written into the mark."""
    (backup / _KEPT).write_text(f"{why}: retention leaves this backup alone\n")


def prune_backups(csv_path: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` backups (none when ``keep`` is 0), leaving out
    of the count, and never deleting, those kept for good (:func:`keep_for_good`); return
    the ones deleted."""
    if keep <= 0:
        return []
    old = [path for path in list_backups(csv_path) if not (path / _KEPT).exists()][:-keep]
    removed = []
    for path in old:
        # out of sight first: a prune killed half-way leaves no half a backup listed
        hidden = path.with_name(f"{_REMOVING}{owner_tag()}-{path.name}")
        try:
            os.rename(path, hidden)
        except FileNotFoundError:  # another process pruned it meanwhile
            continue
        shutil.rmtree(hidden, ignore_errors=True)
        removed.append(path)
        log.info("backup_removed", path=str(path))
    return removed


def brief(problems: list[str]) -> str:
    """SQLite's integrity check's first findings, short enough for one line."""
    text = "; ".join(" ".join(problem.split()) for problem in problems[:3])
    return text if len(text) <= _BRIEF else text[: _BRIEF - 1] + "…"


def copy_uri(journal: Path) -> str:
    """The URI of a read-only connection to a journal copy (a backup's, or one copied by
    hand) that nobody writes. SQLite reads a copy in WAL mode in place only through a -shm
    file it may write, or one beside a -wal file that holds commits: in a folder this
    process may not write (read-only media, another user's share), a copy whose -wal
    holds no commit is read as immutable, which needs neither and writes nothing.

    Raises:
        JournalIOError: such a copy has commits in its -wal file but no -shm file to read
            them through (an immutable read would skip them).
    """
    return f"{journal.resolve().as_uri()}?{'immutable=1' if _immutable(journal) else 'mode=ro'}"


@contextmanager
def read_copy(journal: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to a journal copy that nobody writes, as :func:`copy_uri`
    says; one that SQLite reads in place is read as :func:`~csvjournal._schema.peek` reads
    (the -wal/-shm files it has to make are removed).

    Raises:
        JournalIOError: see :func:`copy_uri`.
        sqlite3.Error: the file cannot be opened or read as a database.
    """
    if _immutable(journal):
        with closing(sqlite3.connect(copy_uri(journal), uri=True)) as conn:
            yield conn
    else:
        with peek(journal) as conn:
            yield conn


def _immutable(journal: Path) -> bool:
    """Whether SQLite can read ``journal`` only as immutable (see :func:`copy_uri`)."""
    if os.access(journal.parent, os.W_OK):
        return False
    try:
        with journal.open("rb") as handle:
            header = handle.read(20)
    except OSError:
        return False  # (opening it says why)
    if header[18:20] != b"\x02\x02":  # not in WAL mode: SQLite reads it in place
        return False
    if not wal_written(journal):
        return True  # (an immutable read looks at no -shm left beside it, stale perhaps)
    if companion(journal, "-shm").exists():
        return False
    raise JournalIOError(
        f"{journal}: a copy in WAL mode whose -wal file holds commits, in a folder this"
        " process may not write, where SQLite cannot read them; copy the folder"
        " somewhere writable and use that copy"
    )


def check_backup(backup: Path, journal_name: str) -> Path:
    """Return the journal file inside ``backup`` once it passed SQLite's integrity check.

    Raises:
        BackupNotFoundError: ``backup`` holds no journal named ``journal_name``.
        JournalCorruptError: the journal copy fails the integrity check.
        JournalIOError: a copy that cannot be read where it is (see :func:`copy_uri`).
    """
    journal = backup / journal_name
    if not backup.is_dir():
        raise BackupNotFoundError(f"{backup}: no such folder (a backup is a folder)")
    if not journal.is_file():
        raise BackupNotFoundError(f"{backup}: not a csvjournal backup (no {journal_name} in it)")
    try:
        conn = sqlite3.connect(copy_uri(journal), uri=True)
        try:
            problems = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        problems = [str(exc)]
    if problems != ["ok"]:
        raise JournalCorruptError(
            f"{journal}: the backup fails SQLite's integrity check ({brief(problems)});"
            " choose another backup"
        )
    return journal
