"""Power cuts, simulated: a folder that keeps only what was synced.

A child process runs with ``powercut/shim.c`` preloaded: each time it syncs a file under
the folder, the shim keeps a copy of the file's data; each time it syncs a folder, the
folder's entries. When the child has been killed, :meth:`Disk.cut` rebuilds the folder from
those records: every name as of its folder's last sync, every file's data as of its own last
sync (empty if it never was). That is what a power cut at that instant may leave: POSIX
promises no more, and a real disk can lose exactly that much. :func:`cut_after_every_sync`
cuts a whole operation after each of its syncs in turn: every state a power cut can leave.

Files are told apart by :func:`file_id`, not by their inode number alone: ext4 gives a
freed number to the next file made, which is another file.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

from _children import READY_TIMEOUT

SHIM_SOURCE = Path(__file__).parent / "powercut" / "shim.c"


_AT_FDCWD = -100
_MAX_HANDLE_SZ = 128


class _FileHandle(ctypes.Structure):
    _fields_ = (
        ("handle_bytes", ctypes.c_uint),
        ("handle_type", ctypes.c_int),
        ("f_handle", ctypes.c_ubyte * _MAX_HANDLE_SZ),
    )


_libc = ctypes.CDLL(None, use_errno=True)


def file_id(path: Path, inode: int) -> str:
    """The shadow's name for the file at ``path`` (not followed if a link), whose inode
    number is ``inode``: the shim's ``file_id`` (powercut/shim.c), the number and, where
    the file system gives one, the file handle, which tells the files that follow one
    another under one number apart (ext4: the inode's generation)."""
    handle, mount_id = _FileHandle(handle_bytes=_MAX_HANDLE_SZ), ctypes.c_int()
    name_to_handle_at = getattr(_libc, "name_to_handle_at", None)
    if name_to_handle_at is None or name_to_handle_at(
        _AT_FDCWD,
        os.fsencode(path),
        ctypes.byref(handle),
        ctypes.byref(mount_id),
        0,  # a link is not followed (AT_SYMLINK_NOFOLLOW is no flag of this call)
    ):
        return str(inode)
    data = bytes(handle.f_handle[: handle.handle_bytes])
    return f"{inode}-{handle.handle_type}-{data.hex()}"


def build_shim(folder: Path) -> Path | None:
    """Compile the shim into ``folder``; ``None`` where it cannot work (not Linux, or no
    C compiler)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None or not sys.platform.startswith("linux"):
        return None
    library = folder / "powercut.so"
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(library), str(SHIM_SOURCE), "-ldl"],
        check=True,
        capture_output=True,
    )
    return library


class Disk:
    """A folder ``root`` whose processes run with the shim, and can lose power."""

    def __init__(self, root: Path, shim: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root.resolve()
        self.shadow = self.root.with_name(self.root.name + ".synced")
        self.shim = shim
        self.cuts = 0

    def settle(self) -> None:
        """Count everything in the folder now as synced (no process may have it open):
        the least that a power cut goes back to."""
        os.sync()
        shutil.rmtree(self.shadow, ignore_errors=True)
        (self.shadow / "inodes").mkdir(parents=True)
        (self.shadow / "dirs").mkdir()
        for folder, dirs, files in os.walk(self.root):
            entries = []
            for name in sorted(dirs + files):
                path = Path(folder, name)
                st = path.lstat()
                kind = "d" if stat.S_ISDIR(st.st_mode) else "f" if stat.S_ISREG(st.st_mode) else "-"
                entries.append(f"{kind} {file_id(path, st.st_ino)} {name}\n")
                if kind == "f":
                    shutil.copyfile(path, self.shadow / "inodes" / file_id(path, st.st_ino))
            (self.shadow / "dirs" / _folder_id(Path(folder))).write_text("".join(entries))
        (self.shadow / "root").write_text(_folder_id(self.root))

    def env(self, *, kill_at: int | None = None, tally: Path | None = None) -> dict[str, str]:
        """The environment of a child process on this disk: one that kills itself right
        after its ``kill_at``-th sync here, if given, and adds a byte to ``tally`` at each."""
        env = {
            **os.environ,
            "LD_PRELOAD": str(self.shim),
            "POWERCUT_ROOT": str(self.root),
            "POWERCUT_SHADOW": str(self.shadow),
        }
        if kill_at is not None:
            env["POWERCUT_KILL_AT"] = str(kill_at)
        if tally is not None:
            env["POWERCUT_TALLY"] = str(tally)
        return env

    def cut(self) -> None:
        """Lose power (every process writing here must be dead): the folder now holds what
        was synced, and nothing else."""
        self.cuts += 1
        self.root.rename(self.root.with_name(f"{self.root.name}.lost{self.cuts}"))
        self._build(self.root, (self.shadow / "root").read_text())
        shutil.rmtree(self.shadow)

    def _build(self, folder: Path, folder_id: str) -> None:
        folder.mkdir()
        listing = self.shadow / "dirs" / folder_id
        if not listing.exists():
            return  # a folder never synced: its entries are not on disk
        for line in listing.read_text().splitlines():
            kind, found, name = line.split(" ", 2)
            data = self.shadow / "inodes" / found
            if kind == "d":
                self._build(folder / name, found)
            elif kind == "f" and data.exists():
                shutil.copyfile(data, folder / name)
            elif kind == "f":
                (folder / name).touch()  # its name was synced, its data never


def _folder_id(folder: Path) -> str:
    return file_id(folder, folder.stat().st_ino)


def integrity(journal_path: Path) -> str:
    """SQLite's ``integrity_check`` of the journal: "ok" or its first problem."""
    with closing(sqlite3.connect(journal_path)) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def cut_after_every_sync(
    tmp_path: Path,
    shim: Path,
    child: Path,
    prepare: Callable[[Disk], list[str]],
    check: Callable[[Disk], None],
) -> int:
    """Run ``child`` (with the arguments ``prepare`` returns, having set up a fresh disk)
    once whole to count its syncs, then once per sync, cutting the power right after it,
    and ``check`` the disk each time: every state a power cut can leave. Return the count.
    """

    def run(folder: Path, kill_at: int | None) -> tuple[Disk, int]:
        disk = Disk(folder / "disk", shim)
        argv = prepare(disk)
        disk.settle()
        tally = folder / "tally"
        done = subprocess.run(
            [sys.executable, str(child), *argv],
            env=disk.env(kill_at=kill_at, tally=tally),
            capture_output=True,
            timeout=READY_TIMEOUT,
            check=False,
        )
        # Background threads make the count differ a little from run to run: a run may
        # end before its ``kill_at``-th sync.
        expected = (0,) if kill_at is None else (0, -signal.SIGKILL)
        assert done.returncode in expected, done.stderr.decode()
        return disk, tally.stat().st_size if tally.exists() else 0

    def cut_after(n: int) -> None:
        disk, _ = run(tmp_path / f"cut{n}", n)
        disk.cut()
        check(disk)

    _, syncs = run(tmp_path / "whole", None)
    assert syncs > 0
    with ThreadPoolExecutor(2) as pool:  # two cuts at a time: the children mostly start up
        for done in pool.map(cut_after, range(1, syncs + 1)):
            assert done is None
    return syncs
