"""Power cuts, simulated: a folder that loses every write not yet synced.

A child process runs with ``powercut/shim.c`` preloaded: each time it syncs a file under
the folder (``fsync``/``fdatasync``, from Python or from SQLite), the shim copies the file
to a shadow folder. When the child has been killed, :meth:`Disk.cut` puts the shadow
folder in the real one's place: what a power cut at that instant would leave, in the worst
case for data (the shim's comment says what it does with names).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SHIM_SOURCE = Path(__file__).parent / "powercut" / "shim.c"


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
        the state a power cut goes back to, at the least."""
        os.sync()
        shutil.rmtree(self.shadow, ignore_errors=True)
        shutil.copytree(self.root, self.shadow)

    def env(self) -> dict[str, str]:
        """The environment of a child process on this disk."""
        return {
            **os.environ,
            "LD_PRELOAD": str(self.shim),
            "POWERCUT_ROOT": str(self.root),
            "POWERCUT_SHADOW": str(self.shadow),
        }

    def cut(self) -> None:
        """Lose power (every process writing here must be dead): the folder now holds what
        was synced, and nothing else."""
        self.cuts += 1
        lost = self.root.with_name(f"{self.root.name}.lost{self.cuts}")
        self.root.rename(lost)
        self.shadow.rename(self.root)
        Path(f"{self.shadow}.lock").unlink(missing_ok=True)
