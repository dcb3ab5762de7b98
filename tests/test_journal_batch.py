"""Journal.batch(): one commit at the end, nested savepoints, visibility, calls refused inside."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _journal import stored_events as _events

import csvjournal
from csvjournal import Journal


def test_a_batch_commits_everything_at_the_end(journal: Journal) -> None:
    with journal.batch():
        seqs = [journal.record(f"PO-{i}", "COMPLETED", N=i) for i in range(20_000)]
    assert seqs == list(range(seqs[0], seqs[0] + 20_000))
    assert len(journal) == 20_000
    assert journal.get("PO-19999")["N"] == "19999"  # type: ignore[index]
    assert journal.counts() == {"COMPLETED": 20_000}


def test_a_batch_that_raises_leaves_no_row_column_or_event(journal: Journal) -> None:
    journal.record("PO-0", "COMPLETED")
    with pytest.raises(RuntimeError), journal.batch():
        for i in range(7000):  # more than one internal flush
            journal.record(f"PO-{i + 1}", "FAILED", NEW_COLUMN=i)
        journal.record("PO-0", "FAILED")
        raise RuntimeError("worker crashed")
    assert len(journal) == 1
    assert journal.get("PO-0")["STATUS"] == "COMPLETED"  # type: ignore[index]
    assert journal.columns == ["PO_NUMBER", "STATUS", "LAST_PROCESSED"]
    assert len(_events(journal)) == 1
    seq = journal.record("PO-1", NEW_COLUMN="x")  # numbering and columns carry on cleanly,
    assert seq == 7003  # above the undone records' numbers (record() returned them)
    assert journal.columns[-1] == "NEW_COLUMN"


def test_a_nested_batch_that_raises_undoes_only_its_own_records(journal: Journal) -> None:
    with journal.batch():
        journal.record("PO-1", "COMPLETED", OUTER=1)
        with pytest.raises(KeyError), journal.batch():
            journal.record("PO-2", "FAILED", INNER=1)
            journal.record("PO-1", "FAILED")
            assert journal.get("PO-2") is not None  # visible inside, to this thread
            raise KeyError("inner")
        journal.record("PO-3", "COMPLETED", AFTER=1)
        with journal.batch():
            journal.record("PO-4", NESTED_OK=1)
    assert journal.get("PO-1")["STATUS"] == "COMPLETED"  # type: ignore[index]
    assert journal.get("PO-2") is None
    assert journal.get("PO-3") is not None
    assert journal.get("PO-4")["NESTED_OK"] == "1"  # type: ignore[index]
    assert "INNER" not in journal.columns
    assert journal.columns[3:] == ["OUTER", "AFTER", "NESTED_OK"]
    assert [key for _, key in _events(journal)] == ["PO-1", "PO-3", "PO-4"]


@pytest.mark.parametrize("undone", ["nested", "outer", "both"])
def test_numbers_of_undone_records_are_never_returned_again(journal: Journal, undone: str) -> None:
    # SQLite's max + 1 gave an undone record's number to the next one: a thread saw
    # record() return 2, then 2 again, for another event.
    returned = [journal.record("a", "S")]
    for _ in range(2):
        with contextlib.suppress(RuntimeError), journal.batch():
            returned.append(journal.record("b", "S"))
            with contextlib.suppress(RuntimeError), journal.batch():
                returned.append(journal.record("c", "S"))
                if undone in ("nested", "both"):
                    raise RuntimeError
            returned.append(journal.record("d", "S"))
            if undone in ("outer", "both"):
                raise RuntimeError
        returned.append(journal.record("e", "S"))  # alone: SQLite numbers it, if it may
        returned.append(journal.record("f", "S"))
    assert returned == sorted(set(returned))  # increasing, each once
    kept = {event.seq for key in "abcdef" for event in journal.history(key)}
    assert kept <= set(returned)


def test_a_batch_sees_its_own_records_and_others_see_them_after_commit(
    journal: Journal,
) -> None:
    other = csvjournal.open(journal.csv_path, export=False)
    try:
        with journal.batch():
            journal.record("PO-1", "COMPLETED")
            assert journal.get("PO-1") is not None
            assert other.get("PO-1") is None
        assert other.get("PO-1") is not None
    finally:
        other.close()


@pytest.mark.parametrize("call", ["flush", "recover", "export", "close"])
def test_waiting_for_other_writers_inside_a_batch_is_refused_at_once(
    journal: Journal, call: str
) -> None:
    # The exporter writes to the journal too: flush(), recover() or close() under the
    # block's own write lock would wait for ever or for the whole busy timeout.
    journal.record("PO-1")
    started = time.monotonic()
    with pytest.raises(csvjournal.BatchOpenError, match=call), journal.batch():
        journal.record("PO-2", "COMPLETED")
        getattr(journal, call)()
    assert time.monotonic() - started < 5
    getattr(journal, call)()  # after the block, it works
    with csvjournal.open(journal.csv_path, export=False) as again:
        assert again.pending() == ["PO-1"]
        assert again.get("PO-2") is None  # the block raised: undone


def test_repeated_keys_in_one_batch_keep_their_order(journal: Journal) -> None:
    with journal.batch():
        journal.record("PO-1", "FAILED", A=1)
        journal.record("PO-1", B=2)
        journal.record("PO-1", "COMPLETED", A=3)
        journal.record("PO-1", C=4)
    row = journal.get("PO-1")
    assert row is not None
    assert (row["STATUS"], row["A"], row["B"], row["C"]) == ("COMPLETED", "3", "2", "4")
    assert [e.status for e in journal.history("PO-1")] == [
        "FAILED",
        "FAILED",
        "COMPLETED",
        "COMPLETED",
    ]


def test_close_waits_for_another_threads_batch_whose_records_reach_the_csv(
    csv_path: Path,
) -> None:
    journal = csvjournal.open(csv_path, key="K")
    inside = threading.Event()
    outcome: list[str] = []

    def batch() -> None:
        with journal.batch():
            for n in range(3):
                journal.record(f"b{n}", "DONE")
            inside.set()
            time.sleep(0.3)  # close() is called meanwhile
        outcome.append("committed")

    thread = threading.Thread(target=batch)
    thread.start()
    inside.wait(30)
    journal.close()
    thread.join()
    assert outcome == ["committed"]
    assert [line.split(",")[0] for line in csv_path.read_text().splitlines()] == [
        "K",
        "b0",
        "b1",
        "b2",
    ]


@pytest.mark.parametrize("depth", ["outer", "nested"])
def test_a_claim_finished_in_a_block_that_raises_is_still_held(
    journal: Journal, depth: str
) -> None:
    # The record is undone: the row is still claimed by this handle, which must go on
    # renewing it and give it back at close.
    journal.record("a")
    journal.record("b")
    assert journal.claim() == ["a"]
    with journal.batch():
        with contextlib.suppress(RuntimeError), journal.batch():
            journal.record("a", "COMPLETED")
            raise RuntimeError("undone")
        if depth == "outer":
            journal.record("b", NOTE="committed")
    assert journal.get("a")["STATUS"] == "IN_PROGRESS"  # type: ignore[index]
    assert journal.extend(["a"], 600) == ["a"]
    assert journal.release(["a"]) == ["a"]
    assert journal.pending() == ["a", "b"]


def test_close_gives_back_a_claim_whose_finishing_block_raised(journal: Journal) -> None:
    journal.record("a")
    assert journal.claim() == ["a"]
    with contextlib.suppress(RuntimeError), journal.batch():
        journal.record("a", "COMPLETED")
        raise RuntimeError("undone")
    csv_path = journal.csv_path
    journal.close()
    with csvjournal.open(csv_path) as again:
        assert again.pending() == ["a"]
        assert again.get("a")["STATUS"] == "PENDING"  # type: ignore[index]


def test_a_claim_finished_in_a_committed_block_is_no_longer_held(journal: Journal) -> None:
    journal.record("a")
    assert journal.claim() == ["a"]
    with journal.batch():
        journal.record("a", "COMPLETED")
    assert journal.extend(["a"], 600) == []
    assert journal.get("a")["STATUS"] == "COMPLETED"  # type: ignore[index]


def test_another_asyncio_tasks_write_never_joins_a_block_open_across_an_await(
    journal: Journal,
) -> None:
    # Blocks are per thread: task B's record() while task A's block awaited went into A's
    # block, returned its number, and was undone with it.
    seen: dict[str, object] = {}

    async def a() -> None:
        with journal.batch():
            journal.record("A1")
            await asyncio.sleep(0.05)  # B runs now
            journal.record("A2")

    async def b() -> None:
        await asyncio.sleep(0.01)
        for name, call in [
            ("record", lambda: journal.record("B1")),
            ("claim", lambda: journal.claim(1, lease=60)),
            ("nested", lambda: journal.batch().__enter__()),
        ]:
            try:
                call()
            except csvjournal.BatchOpenError as exc:
                seen[name] = exc

    async def both() -> None:
        await asyncio.gather(a(), b())

    asyncio.run(both())
    assert sorted(seen) == ["claim", "nested", "record"]
    assert "another asyncio task" in str(seen["record"])
    assert journal.get("A1") is not None
    assert journal.get("A2") is not None
    assert journal.get("B1") is None
    journal.record("B1")  # and after the block, as ever
    assert journal.get("B1") is not None


def test_a_generator_driven_inside_a_block_writes_into_it(journal: Journal) -> None:
    def rows() -> Iterator[int]:
        for n in range(3):
            yield journal.record(f"g{n}")

    with contextlib.suppress(RuntimeError), journal.batch():
        assert len(list(rows())) == 3
        raise RuntimeError("undo")
    assert journal.get("g0") is None


@pytest.fixture
def quick(csv_path: Path) -> Iterator[Journal]:
    """A journal whose writers wait at most half a second for one another."""
    with csvjournal.open(csv_path, key="PO_NUMBER", terminal={"DONE"}, busy_timeout=0.5) as j:
        yield j


def test_a_block_awaiting_another_threads_write_gets_busy_not_a_hang(quick: Journal) -> None:
    # The write waits for the block and the block for the write: it hung for good.
    async def job() -> None:
        with quick.batch():
            quick.record("A1")
            await asyncio.to_thread(quick.record, "B1")

    started = time.monotonic()
    with pytest.raises(csvjournal.JournalBusyError, match="another thread of this process"):
        asyncio.run(job())
    assert time.monotonic() - started < 10
    assert quick.get("A1") is None  # the block raised: undone, and the journal works on
    assert quick.record("B1") == 2  # (the undone A1 was given 1)
    assert quick.pending() == ["B1"]


@pytest.mark.parametrize("write", ["record", "batch"])
def test_another_threads_write_waits_for_a_long_block_up_to_the_busy_timeout(
    quick: Journal, write: str
) -> None:
    inside, done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def hold() -> None:
        with quick.batch():
            quick.record("LONG")
            inside.set()
            done.wait(10)

    def other() -> None:
        if write == "record":
            quick.record("OTHER")
        else:
            with quick.batch():
                quick.record("OTHER")

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert inside.wait(10)
        started = time.monotonic()
        try:
            other()
        except csvjournal.JournalBusyError as exc:
            errors.append(exc)
        waited = time.monotonic() - started
    finally:
        done.set()
        holder.join(10)
    assert len(errors) == 1
    assert "0.5 s" in str(errors[0])
    assert 0.4 < waited < 5
    assert quick.get("LONG") is not None  # the block committed all the same
    assert quick.get("OTHER") is None
    other()  # once the block is over, the write goes through
    assert quick.get("OTHER") is not None


def test_another_threads_write_waits_for_a_short_block(quick: Journal) -> None:
    inside = threading.Event()

    def hold() -> None:
        with quick.batch():
            quick.record("SHORT")
            inside.set()
            time.sleep(0.1)

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(10)
    quick.record("AFTER")  # waits 0.1 s of the 0.5 allowed
    holder.join(10)
    assert [e.key for e in quick.history("AFTER")] == ["AFTER"]
    assert quick.pending() == ["SHORT", "AFTER"]


def test_a_block_whose_exit_a_handler_cut_short_is_undone_and_later_records_commit(
    journal: Journal,
) -> None:
    # Python runs a signal's handler as any function begins: one that raised as the with
    # statement called the block's __exit__ left the block open. Records made in the
    # except clause around it (a "last status") joined that dead block, and were undone
    # when the exception went.
    from csvjournal._batch import Block

    cut = False

    def tracer(frame: object, event: str, arg: object) -> None:
        nonlocal cut
        if event == "call" and frame.f_code is Block.__exit__.__code__ and not cut:  # type: ignore[attr-defined]
            cut = True
            sys.settrace(None)
            raise KeyboardInterrupt

    try:
        sys.settrace(tracer)
        with journal.batch():
            journal.record("in-block", "COMPLETED")
    except KeyboardInterrupt:
        journal.record("interrupted", "FAILED")  # the block's exception still at hand
    finally:
        sys.settrace(None)
    assert cut
    assert journal.get("in-block") is None  # undone, as a block that raised
    journal.record("later")
    with csvjournal.open(journal.csv_path, export=False) as other:  # committed for all
        assert other.get("interrupted") is not None
        assert other.get("later") is not None
        assert other.get("in-block") is None


def test_a_batch_object_is_entered_once(journal: Journal) -> None:
    block = journal.batch()
    with block:
        journal.record("a")
    with pytest.raises(RuntimeError, match="entered once"), block:
        journal.record("b")
    assert journal.get("b") is None
    with journal.batch():  # a new one works
        journal.record("b")
    assert journal.get("b") is not None
