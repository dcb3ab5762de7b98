"""Files replaced atomically: a temporary file beside the target, written and fsynced,
renamed over it with the old file's permissions, the folder fsynced; a reader sees the old
file or the new one, never a mix. And the fingerprint that tells csvjournal's own files
from anybody else's."""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
import shutil
import stat
import tempfile
import zlib
from collections.abc import Iterable
from pathlib import Path

from csvjournal._pids import owner_tag, tag_alive

__all__ = [
    "atomic_write",
    "copy_file",
    "create_like",
    "fingerprint",
    "is_empty",
    "make_folder_like",
    "open_lock_like",
    "reason",
    "remove_dead_temp_files",
    "remove_quietly",
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


def _target(path: Path) -> Path:
    """The file that replacing ``path`` replaces: a symbolic link's target (the link is
    kept, and what it points at, the file people open, is written)."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


_TEMP_MARK = ".csvjournal-"
_MKSTEMP = re.compile(r"[a-z0-9_]{8}")  # the random part tempfile.mkstemp adds


def temp_prefix(path: Path) -> str:
    """The name prefix of temporary files written beside ``path`` (removed after a crash)."""
    return f".{_target(path).name}{_TEMP_MARK}"


def remove_temp_files(path: Path, *, dead_only: bool = False) -> list[Path]:
    """Delete the temporary files a killed writer left beside ``path``; return them.

    With ``dead_only``, only those whose writing process is gone are removed: a file
    written by ``export(path)``, which any process may write at any time, or by an
    exporter that has not yet seen it lost its role (its lock file deleted by hand).
    """
    removed = []
    pattern = glob.escape(temp_prefix(path)) + "*"  # a '[' or '*' in the name is a name
    for leftover in sorted(_target(path).parent.glob(pattern)):
        if dead_only and _writer_alive(leftover, leftover.name[len(temp_prefix(path)) :]):
            continue
        with contextlib.suppress(OSError):  # (a folder of that name: not ours, left)
            leftover.unlink()
        if not os.path.lexists(leftover):
            removed.append(leftover)
    return removed


def remove_dead_temp_files(path: Path) -> list[Path]:
    """Delete the temporary files that killed writers left in the folder of ``path``,
    beside any file there (``export --to`` copies: no journal knows where they go); return
    them. Only those whose writing process is gone: another may be writing one now."""
    removed = []
    for leftover in sorted(_target(path).parent.glob(".*" + _TEMP_MARK + "*")):
        _, _, suffix = leftover.name.rpartition(_TEMP_MARK)
        tag, _, rest = suffix.partition("-")
        # only what write_temp names (an owner tag, then mkstemp's 8 characters): a
        # user's own file of a name like ours is never taken for one
        if not _MKSTEMP.fullmatch(rest) or tag_alive(tag, leftover) is not False:
            continue
        if not leftover.is_file() or leftover.is_symlink():
            continue
        with contextlib.suppress(OSError):
            leftover.unlink()
        if not os.path.lexists(leftover):
            removed.append(leftover)
    return removed


def _writer_alive(leftover: Path, suffix: str) -> bool:
    """Whether the process named in a temporary file's ``<owner tag>-<random>`` suffix may
    still write it (one without a tag, from an older csvjournal, is long dead)."""
    tag, dash, _ = suffix.partition("-")
    return bool(dash) and bool(tag_alive(tag, leftover))


def reason(exc: BaseException | None) -> str:
    """Why writing failed, for a message that names the file being written already: an
    OSError about one of our temporary files gives its reason alone (that hidden name
    means nothing to the user, and is gone), any other error all it says."""
    name = getattr(exc, "filename", None)
    if isinstance(exc, OSError) and exc.strerror and _is_temp(name) and exc.filename2 is None:
        return exc.strerror
    return str(exc)


def _is_temp(name: object) -> bool:
    if not isinstance(name, str | bytes | os.PathLike):
        return False
    base = os.path.basename(os.fsdecode(name))
    return base.startswith(".") and ".csvjournal-" in base


def create_like(path: Path, like: Path | None) -> bool:
    """Create the empty file ``path`` with the read and write permissions of ``like`` (a
    copy of a CSV only its owner may read is no more readable than the CSV), never wider
    for a moment, and always readable and writable by its owner (with no ``like``: 0666
    less the umask); a file already there is left as it is (False: this call made none).

    Raises:
        OSError: ``like`` cannot be read or ``path`` not created.
    """
    # its owner reads and writes it (a journal made from a read-only CSV is written), and
    # nobody runs it
    found = None if like is None else like.stat()
    mode = 0o666 if found is None else stat.S_IMODE(found.st_mode) & 0o666 | 0o600
    try:
        # less the umask; with a ``like``, its owner's alone until its group is settled
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode if found is None else 0o600)
    except FileExistsError:
        return False
    try:
        if found is not None:  # exactly: wider than the umask too, as ``like`` is
            os.fchmod(fd, _take_owner(fd, found, mode))
    finally:
        os.close(fd)
    return True


def _take_owner(file: int | Path, like: os.stat_result, mode: int) -> int:
    """Give ``file`` (a descriptor or a path) the owner and group of ``like``, as far as
    this process may (root: both; another user: the group, if one of theirs), and return
    ``mode`` to set on it after. A group that cannot be kept leaves the file in this
    process's group, which must not get what ``like``'s group had: the group's bits are
    then the others' (as vim does)."""
    chown = os.fchown if isinstance(file, int) else os.chown
    now = os.fstat(file) if isinstance(file, int) else os.stat(file)
    if (now.st_uid, now.st_gid) == (like.st_uid, like.st_gid):
        return mode
    try:
        chown(file, like.st_uid, like.st_gid)  # type: ignore[arg-type]
        return mode
    # not root: a file is its creator's (EPERM); root of a user namespace, and ``like``'s
    # owner not mapped into it (EINVAL)
    except OSError:
        pass
    if now.st_gid != like.st_gid:
        try:
            chown(file, -1, like.st_gid)  # type: ignore[arg-type]
        except OSError:  # not a group of this process's user, or not mapped
            return mode & ~0o070 | (mode & 0o007) << 3
    return mode


def _shared_mode(like: os.stat_result) -> int:
    """The read and write permissions of ``like``, always its owner's too."""
    return stat.S_IMODE(like.st_mode) & 0o666 | 0o600


def make_folder_like(folder: Path, like: Path, *, exist_ok: bool = True) -> None:
    """Make ``folder`` with the owner, group and permissions of the file ``like`` (the
    CSV) as far as this process may, reading giving search: the CSV's backups and lock
    files are as shared as the CSV (a group that may write it may export it). A folder
    already there is left as it is (unless not ``exist_ok``: FileExistsError). Without
    ``like``, the folder gets 0777 less the umask.

    Raises:
        OSError: the folder could not be made.
    """
    try:
        found = like.stat()
    except OSError:
        found = None
    try:
        folder.mkdir(mode=0o777 if found is None else 0o700)
    except FileExistsError:
        if not exist_ok:
            raise
        return
    if found is not None:
        mode = _shared_mode(found)
        fd = os.open(folder, os.O_RDONLY)
        try:
            mode = _take_owner(fd, found, mode)
            os.fchmod(fd, mode | (mode & 0o444) >> 2)  # search where read
        finally:
            os.close(fd)


def open_lock_like(path: Path, like: Path) -> int:
    """Open the lock file ``path`` for reading and writing, making it if missing with the
    owner, group and read and write permissions of the file ``like`` (the CSV), as far as
    this process may: whoever may write the CSV may take the lock. Without ``like``, a
    new lock file gets 0644 less the umask.

    Raises:
        OSError: the file could not be opened or made.
    """
    try:
        found = like.stat()
    except OSError:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return os.open(path, os.O_RDWR)
    try:
        os.fchmod(fd, _take_owner(fd, found, _shared_mode(found)))
    except BaseException:
        os.close(fd)
        raise
    return fd


def copy_file(source: Path, target: Path) -> None:
    """Copy ``source`` into the new file ``target``, with its permissions, synced.

    Raises:
        OSError: reading, writing or syncing failed.
    """
    create_like(target, source)
    with source.open("rb") as reader, target.open("r+b") as writer:
        shutil.copyfileobj(reader, writer, 1 << 20)
        writer.truncate()
        writer.flush()
        os.fsync(writer.fileno())


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
    prefix = f"{temp_prefix(path)}{owner_tag()}-"  # whose it is, for remove_temp_files
    fd, name = tempfile.mkstemp(prefix=prefix, dir=_target(path).parent)
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


def replace_with(temp: Path, path: Path) -> os.stat_result:
    """Rename ``temp`` over ``path`` (over its target if it is a symbolic link) with the
    old file's permissions (a new file gets 0666 less the umask), then fsync the folder.
    On failure ``temp`` is removed, ``path`` kept. Returns ``temp``'s status as renamed
    (its inode, size and modification time are the file's at ``path`` until another file
    replaces it there, as another program's save may as soon as the rename is done).

    The new file gets the old one's owner and group too, as far as this process may (see
    :func:`_take_owner`): a sheet shared with a group stays readable by it. A file this
    process may not write (write-protected, or another user's) is not replaced: renaming
    over it needs only the folder's permission, but it would take the file over.

    Raises:
        OSError: renaming failed; PermissionError: ``path`` is there and not writable.
    """
    target = _target(path)
    try:
        try:
            old = target.stat()
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        else:
            _check_writable(target)
            # before the mode: a chown by another user than root clears a setgid bit
            mode = _take_owner(temp, old, stat.S_IMODE(old.st_mode))
        os.chmod(temp, mode)
        renamed = os.stat(temp)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return renamed


def _check_writable(target: Path) -> None:
    effective = os.access in os.supports_effective_ids
    if not os.access(target, os.W_OK, effective_ids=effective):
        raise PermissionError(
            errno.EACCES,
            "write-protected for this user (make it writable to let csvjournal update it)",
            str(target),
        )


def _umask() -> int:
    """The process's umask, read without setting it (setting it and back, the only other
    way, gives a file another thread creates meanwhile the wrong mode)."""
    with (
        contextlib.suppress(OSError, ValueError),
        open("/proc/self/status", encoding="ascii", errors="replace") as status,
    ):
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    umask = os.umask(0o022)  # no /proc (macOS, a Linux before 4.7): the racy way
    os.umask(umask)
    return umask


def is_empty(path: Path) -> bool:
    """Whether ``path`` is a file with nothing in it (False when there is none)."""
    try:
        return path.stat().st_size == 0
    except FileNotFoundError:
        return False


def remove_quietly(paths: list[Path]) -> None:
    """Remove these files, then folders. Best effort: SQLite's own lock, not the writers'
    lock file, keeps writers apart, so a lock file removed under another opener is harmless."""
    for path in paths:
        with contextlib.suppress(OSError):
            if path.is_dir():
                path.rmdir()
            else:
                path.unlink()
