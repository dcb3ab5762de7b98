"""Files one user makes for another to write: POSIX ACLs."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from csvjournal._acl import make_like

OWNER, OTHER = 4321, 65534


@pytest.fixture
def folder() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("acting as a second user needs root, which this machine's tests lack")
    made = Path(tempfile.mkdtemp(prefix="csvjournal-acl-"))
    made.chmod(0o777)
    yield made
    for path in made.iterdir():
        path.unlink()
    made.rmdir()


def _opens_for_writing(path: Path, uid: int) -> bool:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.close(os.open(path, os.O_RDWR))
            os._exit(0)
        except BaseException:
            os._exit(1)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


@pytest.mark.parametrize("mode", [0o644, 0o664, 0o600])
def test_a_file_made_like_another_is_writable_by_who_may_write_that(
    folder: Path, mode: int
) -> None:
    model = folder / "journal"
    model.write_bytes(b"")
    os.chown(model, OWNER, OWNER)
    model.chmod(mode)
    made = folder / "journal-wal"
    assert make_like(made, model, b"\0")
    assert made.read_bytes() == b"\0"
    assert os.stat(made).st_uid == os.geteuid()  # this user's, not the model's owner's
    assert _opens_for_writing(made, OWNER)
    assert not _opens_for_writing(made, OTHER)
    assert [path.name for path in folder.iterdir() if path.name.startswith(".")] == []


def test_a_file_that_exists_is_left_as_it_is(folder: Path) -> None:
    model = folder / "journal"
    model.write_bytes(b"")
    made = folder / "journal-wal"
    made.write_bytes(b"frames")
    assert not make_like(made, model, b"\0")
    assert made.read_bytes() == b"frames"
    assert sorted(path.name for path in folder.iterdir()) == ["journal", "journal-wal"]


def test_nothing_is_made_for_a_model_that_is_gone(folder: Path) -> None:
    assert not make_like(folder / "journal-wal", folder / "journal", b"\0")
    assert list(folder.iterdir()) == []
