"""Telling the file system of a path from /proc/mounts."""

from __future__ import annotations

from pathlib import Path

import pytest

import csvjournal
from csvjournal._fsinfo import filesystem_of

MOUNTS = """\
/dev/vda / ext4 rw,relatime 0 0
server:/export /mnt/share nfs4 rw,relatime 0 0
//nas/jobs /mnt/my\\040jobs cifs rw 0 0
tmpfs /mnt/share/local tmpfs rw 0 0
"""


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/home/me/orders.csv", "ext4"),
        ("/mnt/share/orders.csv", "nfs4"),
        ("/mnt/share", "nfs4"),
        ("/mnt/shared/orders.csv", "ext4"),  # a prefix of the name is not a parent
        ("/mnt/my jobs/orders.csv", "cifs"),
        ("/mnt/share/local/orders.csv", "tmpfs"),  # the deepest mount wins
    ],
)
def test_the_deepest_mount_point_decides(path: str, kind: str) -> None:
    assert filesystem_of(Path(path), MOUNTS) == kind


def test_a_local_journal_is_accepted(csv_path: Path) -> None:
    assert filesystem_of(csv_path.parent) not in {"nfs", "nfs4", "cifs"}
    csvjournal.open(csv_path, key="ID").close()
