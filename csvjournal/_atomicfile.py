"""Files replaced atomically: a temporary file beside the target, written and fsynced,
renamed over it with the old file's permissions, the folder fsynced; a reader sees the old
file or the new one, never a mix. And the fingerprint that tells csvjournal's own files
from anybody else's."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import zlib
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "atomic_write",
    "fingerprint",
    "remove_temp_files",
    "replace_with",
    "sync_file",
    "temp_prefix",
    "write_temp",
]


def fingerprint(data: bytes | Iterable[bytes]) -> str:
    """Identify a CSV's bytes, to tell csvjournal's own exports from hand edits: length and
    CRC-32 (a tenth of SHA-256's cost; this tells accidents apart, it is no security check)."""
    if isinstance(data, bytes):
        data = (data,)
    length, crc = 0, 0
    for chunk in data:
        length += len(chunk)
        crc = zlib.crc32(chunk, crc)
    return f"{length}:{crc:08x}"


def temp_prefix(path: Path) -> str:
    """The name prefix of temporary files written beside ``path`` (removed after a crash)."""
    return f".{path.name}.csvjournal-"


def remove_temp_files(path: Path) -> list[Path]:
    """Delete the temporary files a killed writer left beside ``path``; return them.

    Only the handle holding the exporter lock may call this: nobody else writes them.
    """
    removed = []
    for leftover in sorted(path.parent.glob(temp_prefix(path) + "*")):
        leftover.unlink(missing_ok=True)
        removed.append(leftover)
    return removed


def atomic_write(path: Path, data: bytes | Iterable[bytes]) -> None:
    """Replace ``path`` with ``data`` atomically (see :func:`write_temp` and
    :func:`replace_with`). On any error the old file is untouched and the temporary file
    removed.

    Raises:
        OSError: writing, syncing or renaming failed.
    """
    temp, _ = write_temp(path, data)
    replace_with(temp, path)


def sync_file(path: Path) -> None:
    """fsync the file ``path``.

    Raises:
        OSError: opening or syncing failed.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_temp(path: Path, data: bytes | Iterable[bytes], *, sync: bool = True) -> tuple[Path, str]:
    """Write ``data`` to a new temporary file beside ``path`` and fsync it (unless not
    ``sync``: then the caller must :func:`sync_file` it before using it); return the file
    and the data's :func:`fingerprint`. The file is removed again if anything fails.

    Raises:
        OSError: writing or syncing failed.
    """
    chunks = (data,) if isinstance(data, bytes) else data
    fd, name = tempfile.mkstemp(prefix=temp_prefix(path), dir=path.parent)
    length, crc = 0, 0
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
                length += len(chunk)
                crc = zlib.crc32(chunk, crc)
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise
    return Path(name), f"{length}:{crc:08x}"


def replace_with(temp: Path, path: Path) -> None:
    """Rename ``temp`` over ``path`` with the old file's permissions (a new file gets 0666
    less the umask), then fsync the folder. On failure ``temp`` is removed, ``path`` kept.

    Raises:
        OSError: renaming failed.
    """
    try:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
