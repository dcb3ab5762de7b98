"""Files made by one user that another must write: POSIX access ACLs, set through the
``system.posix_acl_access`` extended attribute (Linux; elsewhere, or on a file system
without ACLs, nothing is granted and the caller goes on without).

An operator who only reads a job's journal still makes its -wal and -shm files when no
process has it open (SQLite needs them to read). Made with the journal's own access for
its owner and group, they stay writable by the job's user, who may start recording while
the operator looks.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import struct
from pathlib import Path

import structlog

__all__ = ["make_like"]

log = structlog.get_logger(__name__)

_XATTR = "system.posix_acl_access"
_VERSION = 2
_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_NO_ID = 0xFFFFFFFF


def _acl(owner_bits: int, group_bits: int, other_bits: int, uid: int, gid: int) -> bytes:
    """The xattr value of an ACL: this file's owner may read and write it; user ``uid``
    has ``owner_bits`` and group ``gid`` ``group_bits`` (the journal's); others keep
    ``other_bits``. Entries sorted by tag, then id, as the kernel requires."""
    entries = [
        (_USER_OBJ, 0o6, _NO_ID),
        (_USER, owner_bits, uid),
        (_GROUP_OBJ, group_bits, _NO_ID),
        (_GROUP, group_bits, gid),
        (_MASK, owner_bits | group_bits, _NO_ID),
        (_OTHER, other_bits, _NO_ID),
    ]
    return struct.pack("<I", _VERSION) + b"".join(
        struct.pack("<HHI", tag, perm, ident) for tag, perm, ident in entries
    )


def make_like(path: Path, model: Path, content: bytes) -> bool:
    """Create ``path`` holding ``content``, readable and writable by whoever may read and
    write ``model`` (its owner and group, by ACL), unless it exists. It appears whole or
    not at all: made under a temporary name, then linked into place. True if this call
    made it. (SQLite sets an *empty* -wal or -shm file it opens to its database's mode,
    which would narrow the ACL's mask to the group's bits: ``content`` keeps it.)

    Never raises for a file system or platform without ACLs (nothing is made then, and
    the caller's next step creates the file as it would have), or for a file another
    process made first.
    """
    if not hasattr(os, "setxattr"):
        return False
    try:
        found = model.stat()
    except OSError:
        return False
    mode = stat.S_IMODE(found.st_mode)
    owner_bits, group_bits, other_bits = (mode >> 6) & 0o6, (mode >> 3) & 0o6, mode & 0o4
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        return False
    try:
        try:
            try:
                os.write(fd, content)
            finally:
                os.close(fd)
            value = _acl(owner_bits, group_bits, other_bits, found.st_uid, found.st_gid)
            os.setxattr(temporary, _XATTR, value)
            os.link(temporary, path)
        except FileExistsError:
            return False  # another process made it first: theirs
        except OSError as exc:  # no ACLs here (EOPNOTSUPP), or a folder that refuses links
            log.debug("acl_not_set", path=str(path), error=str(exc))
            return False
        return True
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()
