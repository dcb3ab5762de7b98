"""Which file system a path lies on: SQLite's WAL mode is unsafe on network file systems."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["NETWORK_FILESYSTEMS", "WAL_HEADER", "companion", "filesystem_of", "wal_written"]

NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "9p",
        "afs",
        "ceph",
        "glusterfs",
        "lustre",
        "fuse.sshfs",
        "fuse.glusterfs",
        "fuse.s3fs",
        "davfs",
        "fuse.rclone",
    }
)


def _unescape(field: str) -> str:
    # /proc/mounts writes space, tab, newline and backslash as octal escapes.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def filesystem_of(path: Path, mounts: str | None = None) -> str | None:
    """The type of the file system holding ``path`` (``None`` where /proc/mounts is absent).

    ``mounts`` is the text of /proc/mounts, read when not given.
    """
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    target = os.path.realpath(path)
    best, kind = "", None
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        point = _unescape(parts[1])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, parts[2]
    return kind


def companion(journal: Path, suffix: str) -> Path:
    """The journal's ``-wal``, ``-shm`` or ``-journal`` file (``suffix``), where SQLite
    makes it: beside the file a symlinked journal points to, not beside the link."""
    return Path(f"{os.path.realpath(journal)}{suffix}")


# A -wal file no longer than its header holds no frame, so no commit (wal.c: WAL_HDRSIZE).
WAL_HEADER = 32


def wal_written(journal: Path) -> bool:
    """Whether the journal's -wal file holds more than its header: a commit, or one
    being written (not yet checkpointed into the journal file)."""
    try:
        return companion(journal, "-wal").stat().st_size > WAL_HEADER
    except FileNotFoundError:
        return False
