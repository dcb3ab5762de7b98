"""A journal read by a user who may not write it (an operator looking at another account's
job): nothing of the visit stays behind, and the job's owner records on."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import csvjournal
from csvjournal.cli import cli

NOBODY = 65534


@pytest.fixture(scope="module", autouse=True)
def _warmed_up(tmp_path_factory: pytest.TempPathFactory) -> None:
    """What the children do, once here first: the modules they would import late
    (alembic's, ``_strptime``...) are loaded before they fork and become another user, who
    may not read the files of a Python installed for root only."""
    csv_path = tmp_path_factory.mktemp("warm") / "orders.csv"
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a", "COMPLETED")
        journal.claim(1)
        journal.history("a")
        journal.recover()
    csvjournal.open(csv_path).close()  # a second session's backup reads the first's time
    CliRunner().invoke(cli, ["status", str(csv_path), "--json"])


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder every user may write (a team's share); pytest's own is its owner's only."""
    if os.geteuid() != 0:
        pytest.skip("acting as a second user needs root, which this machine's tests lack")
    folder = Path(tempfile.mkdtemp(prefix="csvjournal-shared-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder)


def _forked_as(uid: int, work: Callable[[], object]) -> tuple[int, int, int]:
    """Start ``work`` in a child process of user ``uid`` (forked: the modules it needs are
    loaded already); its pid and the pipe its result (``repr``) comes out of."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.write(write, repr(work()).encode())
            code = 0
        except BaseException:  # its traceback is the result: the assertion shows it
            os.write(write, traceback.format_exc().encode())
        finally:
            os._exit(code)
    os.close(write)
    return pid, read, uid


def _result(started: tuple[int, int, int], timeout: float = 60.0) -> tuple[int, str]:
    """The exit status and result of a :func:`_forked_as` child (killed after
    ``timeout`` seconds: then its status is -9)."""
    pid, read, _ = started
    deadline = time.monotonic() + timeout
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            done = os.waitpid(pid, 0)
            break
        time.sleep(0.05)
    with os.fdopen(read, "rb") as pipe:
        said = pipe.read().decode()
    return os.waitstatus_to_exitcode(done[1]), said


def _as_nobody(work: str, csv_path: Path) -> tuple[int, str]:
    """Run ``work`` ("pending" or "status", through the API or "cli ...") on ``csv_path``
    as user nobody; its exit status and what it found."""

    def look() -> object:
        if work.startswith("cli "):
            result = CliRunner().invoke(cli, [work[4:], str(csv_path), "--json"])
            return result.exit_code, result.output
        with csvjournal.open(csv_path, export=False) as journal:
            return journal.pending() if work == "pending" else journal.counts()

    return _result(_forked_as(NOBODY, look))


@pytest.mark.parametrize("work", ["pending", "status", "cli pending", "cli status"])
def test_a_reader_who_may_not_write_the_journal_leaves_nothing_behind(
    shared_folder: Path, work: str
) -> None:
    csv_path = shared_folder / "orders.csv"
    csv_path.write_text("ID\na\nb\n")
    with csvjournal.open(csv_path, key="ID") as journal:  # the owner's job (root's, here)
        journal.record("a", "COMPLETED")
        expected = journal.pending() if work == "pending" else journal.counts()
        CliRunner().invoke(cli, ["status", str(csv_path)])  # every module loaded before the fork
    before = sorted(path.name for path in shared_folder.iterdir())
    code, found = _as_nobody(work, csv_path)
    assert code == 0
    if work.startswith("cli "):
        exit_code, output = ast.literal_eval(found)
        assert exit_code == 0, output
        shown = json.loads(output)
        if work == "cli status":
            assert (shown["counts"], shown["pending"]) == ({"COMPLETED": 1, "PENDING": 1}, 1)
        else:
            assert shown["pending"] == ["b"]
    else:
        assert found == repr(expected)
    assert sorted(path.name for path in shared_folder.iterdir()) == before  # no -wal, -shm
    with csvjournal.open(csv_path) as journal:  # the owner records on
        journal.record("b", "COMPLETED")
    assert "b,COMPLETED" in csv_path.read_text()


def test_a_reader_leaves_the_files_of_a_journal_in_use_alone(shared_folder: Path) -> None:
    csv_path = shared_folder / "orders.csv"
    csv_path.write_text("ID\na\nb\n")
    with csvjournal.open(csv_path, key="ID") as journal:  # open: its -wal and -shm exist
        journal.record("a", "COMPLETED")
        code, found = _as_nobody("pending", csv_path)
        assert (code, found) == (0, repr(["b"]))
        assert Path(f"{journal.journal_path}-shm").exists()
        journal.record("b", "COMPLETED")
    assert "b,COMPLETED" in csv_path.read_text()


def test_a_reader_with_two_handles_leaves_nothing_behind(shared_folder: Path) -> None:
    csv_path = shared_folder / "orders.csv"
    csv_path.write_text("ID\na\nb\n")
    csvjournal.open(csv_path, key="ID").close()
    before = sorted(path.name for path in shared_folder.iterdir())

    def two() -> object:
        first = csvjournal.open(csv_path, export=False)
        with csvjournal.open(csv_path, export=False) as second:
            first.close()  # the second still reads
            return second.pending()

    assert _result(_forked_as(NOBODY, two)) == (0, repr(["a", "b"]))
    assert sorted(path.name for path in shared_folder.iterdir()) == before


OWNER = 4321


def test_the_jobs_user_records_while_an_operator_watches(shared_folder: Path) -> None:
    csv_path = shared_folder / "orders.csv"
    csv_path.write_text("ID\na\nb\n")
    os.chown(csv_path, OWNER, OWNER)
    owner = _result(_forked_as(OWNER, lambda: csvjournal.open(csv_path, key="ID").close()))
    assert owner == (0, "None")
    # the operator watches (the job is idle: no -wal/-shm yet) while the job's user records
    watch = _forked_as(
        NOBODY,
        lambda: CliRunner().invoke(cli, ["status", str(csv_path), "--watch", "--interval", "0.1"]),
    )
    try:
        time.sleep(1.5)  # some looks taken

        def record() -> object:
            with csvjournal.open(csv_path) as journal:
                return [journal.record(key, "COMPLETED") for key in ("a", "b")]

        assert _result(_forked_as(OWNER, record)) == (0, "[1, 2]")
        code, _ = _result(watch, timeout=30)  # every row done: the watch ends
        assert code == 0
    finally:  # a watch that never ended must not outlive the test
        with contextlib.suppress(ProcessLookupError):
            os.kill(watch[0], signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(watch[0], 0)
    assert "a,COMPLETED" in csv_path.read_text()


def test_an_operators_refused_restore_leaves_the_owner_able_to_record(
    shared_folder: Path,
) -> None:
    csv_path = shared_folder / "orders.csv"
    csv_path.write_text("ID\na\nb\n")
    os.chown(csv_path, OWNER, OWNER)

    def back_up() -> object:
        with csvjournal.open(csv_path, key="ID") as journal:
            return str(journal.backup())

    code, backup = _result(_forked_as(OWNER, back_up))
    assert code == 0, backup
    before = sorted(path.name for path in shared_folder.iterdir())

    def restore() -> object:
        try:
            csvjournal.restore(csv_path, ast.literal_eval(backup))
        except csvjournal.CsvJournalError as exc:
            return type(exc).__name__
        return "restored"

    assert _result(_forked_as(NOBODY, restore)) == (0, repr("JournalIOError"))
    assert sorted(path.name for path in shared_folder.iterdir()) == before  # no -wal, -shm

    def record() -> object:
        with csvjournal.open(csv_path) as journal:
            return journal.record("a", "COMPLETED")

    assert _result(_forked_as(OWNER, record)) == (0, "1")


def test_an_open_that_changes_the_settings_goes_on_where_no_backup_can_be_made(
    shared_folder: Path,
) -> None:
    # the CSV in a folder this user may not write, its journal kept elsewhere (the README's
    # case): the backup before new settings cannot be made, and the open goes on
    sheets = shared_folder / "sheets"
    sheets.mkdir()
    sheets.chmod(0o755)  # root's: nobody may not write here
    csv_path = sheets / "orders.csv"
    csv_path.write_text("ID\na\n")
    csv_path.chmod(0o644)
    journal_path = shared_folder / "orders.csv.journal"

    def reopen() -> object:
        csvjournal.open(csv_path, key="ID", journal_path=journal_path, export=False).close()
        with csvjournal.open(
            csv_path, journal_path=journal_path, export=False, terminal={"X"}
        ) as journal:
            return sorted(journal.settings.terminal)

    assert _result(_forked_as(NOBODY, reopen)) == (0, "['X']")


def test_the_owner_reading_its_own_write_protected_journal_leaves_nothing_behind(
    shared_folder: Path,
) -> None:
    # SQLite made the -wal/-shm read-only like the journal: they stayed, and once the
    # journal was writable again every record failed on them
    csv_path = shared_folder / "orders.csv"
    csv_path.write_text("ID\na\nb\n")

    def owner() -> object:
        with csvjournal.open(csv_path, key="ID") as journal:
            journal.record("a", "COMPLETED")
        journal_path = Path(f"{csv_path}.journal")
        journal_path.chmod(0o444)  # write-protected for a while
        result = CliRunner().invoke(cli, ["pending", str(csv_path)])
        left = sorted(path.name for path in shared_folder.iterdir())
        journal_path.chmod(0o644)
        with csvjournal.open(csv_path) as journal:
            journal.record("b", "COMPLETED")
        return result.exit_code, result.output, left

    code, found = _result(_forked_as(NOBODY, owner))
    assert code == 0, found
    exit_code, output, left = ast.literal_eval(found)
    assert (exit_code, output) == (0, "b\n")
    assert [name for name in left if name.endswith(("-wal", "-shm"))] == []


def test_a_write_protected_journal_is_refused_before_a_backup_is_made(
    shared_folder: Path,
) -> None:
    # each exporting open (run) took a session backup, pruning an older one, and each
    # upgrade one kept for good, then failed at the first write
    csv_path = shared_folder / "orders.csv"
    csv_path.write_text("ID\na\n")
    old = shared_folder / "old" / "orders.csv"
    old.parent.mkdir(mode=0o777)
    shutil.copy(Path(__file__).parent / "fixtures" / "journal-0005.sqlite", f"{old}.journal")
    os.chown(f"{old}.journal", NOBODY, NOBODY)

    def owner() -> object:
        with csvjournal.open(csv_path, key="ID"):
            pass
        outcomes = []
        for path in (csv_path, old):
            Path(f"{path}.journal").chmod(0o444)
            before = sorted(p.name for p in path.parent.rglob("*"))
            try:
                with csvjournal.open(path) as journal:  # (a run)
                    journal.record("a", "COMPLETED")
            except csvjournal.JournalIOError as exc:
                outcomes.append(str(exc))
            outcomes.append(sorted(p.name for p in path.parent.rglob("*")) == before)
        return outcomes

    code, found = _result(_forked_as(NOBODY, owner))
    assert code == 0, found
    refused, unchanged, old_refused, old_unchanged = ast.literal_eval(found)
    assert "the journal file" in refused
    assert "read-only to this process" in refused
    assert "read-only to this process" in old_refused
    assert unchanged
    assert old_unchanged


def _journal_in_use_by_operator(
    csv_path: Path, hold: float, acls: bool = True
) -> tuple[int, int, int]:
    """An operator's handle on the idle journal of ``csv_path``, open for ``hold`` seconds
    once it has read (``acls=False``: as on a file system that keeps none)."""

    def look() -> object:
        if not acls:
            monkey = pytest.MonkeyPatch()
            monkey.setattr("csvjournal._readonly.make_like", lambda *args: False)
        with csvjournal.open(csv_path, export=False) as journal:
            found = journal.pending()
            time.sleep(hold)
        return found

    return _forked_as(NOBODY, look)


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def test_the_jobs_user_records_while_an_operators_view_is_open(shared_folder: Path) -> None:
    # the -wal/-shm files the operator's view made were the operator's, read-only to the
    # job's user: every record failed until the view closed
    csv_path = shared_folder / "orders.csv"
    csv_path.write_text("ID\na\nb\n")
    os.chown(csv_path, OWNER, OWNER)
    assert _result(_forked_as(OWNER, lambda: csvjournal.open(csv_path, key="ID").close())) == (
        0,
        "None",
    )
    view = _journal_in_use_by_operator(csv_path, hold=3.0)
    _wait_for(Path(f"{csv_path}.journal-shm"))

    def record() -> object:
        with csvjournal.open(csv_path) as journal:
            return [journal.record(key, "COMPLETED") for key in ("a", "b")]

    assert _result(_forked_as(OWNER, record)) == (0, "[1, 2]")
    assert os.waitpid(view[0], os.WNOHANG)[0] == 0  # the view was open all along
    assert _result(view) == (0, repr(["a", "b"]))
    assert _result(_forked_as(OWNER, record)) == (0, "[3, 4]")  # and after it
    assert not [p.name for p in shared_folder.iterdir() if p.name.endswith(("-wal", "-shm"))]
    assert "b,COMPLETED" in csv_path.read_text()


def test_the_jobs_user_waits_out_an_operators_view_without_acls(shared_folder: Path) -> None:
    # where the operator's -wal/-shm files stay read-only to the job's user, its open
    # waits for the view to end (which removes them), rather than fail at its first write
    csv_path = shared_folder / "orders.csv"
    csv_path.write_text("ID\na\nb\n")
    os.chown(csv_path, OWNER, OWNER)
    assert _result(_forked_as(OWNER, lambda: csvjournal.open(csv_path, key="ID").close()))[0] == 0
    view = _journal_in_use_by_operator(csv_path, hold=1.0, acls=False)
    _wait_for(Path(f"{csv_path}.journal-shm"))

    def record() -> object:
        with csvjournal.open(csv_path) as journal:
            return journal.record("a", "COMPLETED")

    assert _result(_forked_as(OWNER, record)) == (0, "1")
    assert _result(view) == (0, repr(["a", "b"]))
