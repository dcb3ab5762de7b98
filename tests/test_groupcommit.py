"""The leader/follower group commit, with real threads."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Sequence

import pytest

from csvjournal._groupcommit import GroupCommitter, Refused


class Committer:
    """A commit function that takes a while, like an fsync, and remembers its groups."""

    def __init__(self, seconds: float = 0.002, fail_on: int | None = None) -> None:
        self.seconds = seconds
        self.fail_on = fail_on
        self.groups: list[list[int]] = []
        self.durable: set[int] = set()
        self.lock = threading.Lock()

    def __call__(self, items: Sequence[int]) -> list[int]:
        time.sleep(self.seconds)
        with self.lock:
            self.groups.append(list(items))
            if self.fail_on is not None and self.fail_on in items:
                raise OSError(f"disk I/O error in group {list(items)}")
            self.durable.update(items)
        return [item * 10 for item in items]


def run_threads(target: object, count: int) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(n: int) -> None:
        try:
            target(n)  # type: ignore[operator]
        except BaseException as exc:  # collected for the test to inspect
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


@pytest.mark.parametrize("gather", [0.0, 0.0002, 0.005])
def test_each_caller_gets_its_own_result_after_its_own_commit(gather: float) -> None:
    commit = Committer()
    committer = GroupCommitter(commit, gather_seconds=gather)
    per_thread = 50

    def work(n: int) -> None:
        for i in range(per_thread):
            item = n * 1000 + i
            assert committer.submit(item) == item * 10
            assert item in commit.durable  # returned only once its commit was done

    assert run_threads(work, 8) == []
    committed = [item for group in commit.groups for item in group]
    assert sorted(committed) == sorted(n * 1000 + i for n in range(8) for i in range(per_thread))
    # Callers that waited during a commit shared the next one.
    assert len(commit.groups) < len(committed) / 2


def test_single_caller_never_waits_for_company() -> None:
    commit = Committer(seconds=0)
    committer = GroupCommitter(commit, gather_seconds=1.0)
    started = time.monotonic()
    for i in range(20):
        assert committer.submit(i) == i * 10
    assert time.monotonic() - started < 1.0
    assert commit.groups == [[i] for i in range(20)]


def test_a_failed_group_fails_every_caller_in_it_and_only_them() -> None:
    commit = Committer(seconds=0.01, fail_on=3)
    committer = GroupCommitter(commit, gather_seconds=0.005)
    results: dict[int, object] = {}
    lock = threading.Lock()

    def work(n: int) -> None:
        try:
            outcome: object = committer.submit(n)
        except OSError as exc:
            outcome = exc
        with lock:
            results[n] = outcome

    assert run_threads(work, 8) == []
    failed_group = next(group for group in commit.groups if 3 in group)
    errors = {id(results[n]) for n in failed_group}
    assert len(errors) == 1  # the very same exception for the whole group
    for n in range(8):
        if n in failed_group:
            assert isinstance(results[n], OSError)
            assert n not in commit.durable
        else:
            assert results[n] == n * 10
    assert committer.submit(99) == 990  # the committer goes on after a failure


@pytest.mark.parametrize("together", [1, 8])
def test_a_refused_item_fails_its_own_caller_and_the_rest_of_its_group_commits(
    together: int,
) -> None:
    committed: list[list[int]] = []
    release = threading.Event()

    def commit(items: Sequence[int]) -> list[object]:
        release.wait(5)  # the first group holds the others back until all have queued
        committed.append(list(items))
        return [item * 10 if item % 2 == 0 else Refused(ValueError(item)) for item in items]

    committer: GroupCommitter[int, object] = GroupCommitter(commit, gather_seconds=0.001)
    results: dict[int, object] = {}

    def work(n: int) -> None:
        if n == 0:
            time.sleep(0.05)  # the others queue behind the first commit meanwhile
            release.set()
        try:
            results[n] = committer.submit(n)
        except ValueError as exc:
            results[n] = exc

    assert run_threads(work, together) == []
    mixed = [group for group in committed if {n % 2 for n in group} == {0, 1}]
    assert mixed or together == 1  # a refused and a committed item shared a group
    for n in range(together):
        if n % 2:
            assert isinstance(results[n], ValueError)
            assert results[n].args == (n,)  # its own error
        else:
            assert results[n] == n * 10
    assert committer.submit(4) == 40  # the committer goes on


def test_a_commit_that_refused_every_item_is_not_synced() -> None:
    syncs: list[list[int]] = []
    groups: list[list[int]] = []

    def commit(items: Sequence[int]) -> list[object]:
        groups.append(list(items))
        return [Refused(ValueError(item)) if item < 0 else item for item in items]

    committer: GroupCommitter[int, object] = GroupCommitter(
        commit, lambda: syncs.append(groups[-1])
    )
    with pytest.raises(ValueError, match="-1"):
        committer.submit(-1)
    assert syncs == []  # nothing was committed: no fsync
    assert committer.submit(1) == 1
    assert syncs == [[1]]


def test_a_leader_waits_longer_the_more_callers_of_the_last_group_are_missing() -> None:
    # After a group of 3, the next leader waits up to 0.1 s for each of the 2 missing: the
    # others coming back 60 ms apart (as threads do, one at a time) still share its commit.
    commit = Committer(seconds=0.02)  # callers that come during a commit queue for the next
    committer = GroupCommitter(commit, gather_seconds=0.1)
    barrier = threading.Barrier(4)

    def together(n: int) -> None:
        barrier.wait()
        committer.submit(n)

    def staggered(n: int) -> None:
        time.sleep(0.06 * n)
        committer.submit(100 + n)

    assert run_threads(together, 4) == []  # a lone first caller, then the other three
    assert len(commit.groups[-1]) == 3
    assert run_threads(staggered, 3) == []
    assert sorted(commit.groups[-1]) == [100, 101, 102]


def test_a_caller_of_the_last_group_that_does_not_come_back_costs_one_wait() -> None:
    # After a group of 5, a caller alone (the other four threads done, or busy elsewhere)
    # waits one gather window for company that does not come: not one for each of the four
    # missing (1.2 s here), which every group after a thread's last record paid.
    commit = Committer(seconds=0.02)
    committer = GroupCommitter(commit, gather_seconds=0.3)
    barrier = threading.Barrier(6)

    def together(n: int) -> None:
        barrier.wait()
        committer.submit(n)

    assert run_threads(together, 6) == []  # a lone first caller, then the other five
    assert len(commit.groups[-1]) == 5
    started = time.monotonic()
    assert committer.submit(99) == 990
    waited = time.monotonic() - started
    assert 0.25 < waited < 0.9, waited
    assert commit.groups[-1] == [99]


def _interrupt_main_thread() -> None:
    # The signal reaches the main thread itself and cuts its wait short.
    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)


def _interrupt_from_this_thread() -> None:
    # The signal reaches this thread; the main thread runs the handler only once it wakes.
    signal.raise_signal(signal.SIGINT)


@pytest.mark.parametrize("interrupt", [_interrupt_main_thread, _interrupt_from_this_thread])
def test_an_interrupted_caller_still_wakes_the_rest_of_its_group(
    interrupt: Callable[[], None],
) -> None:
    # Callers of a finished group are woken in a chain, each by the one before. Ctrl-C in
    # the main thread while it waits must not break the chain: the main thread raises
    # KeyboardInterrupt once its group is done, and the caller after it still returns.
    commit = Committer(seconds=0.3)
    committer = GroupCommitter(commit, gather_seconds=0.0)
    results: dict[int, object] = {}

    def later(n: int, delay: float) -> threading.Thread:
        def run() -> None:
            time.sleep(delay)
            results[n] = committer.submit(n)

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    first = later(1, 0.0)  # commits alone, 0.0-0.3 s
    leader = later(2, 0.05)  # queued first: leads the next group, 0.3-0.6 s
    last = later(4, 0.15)  # the caller the main thread wakes
    timer = threading.Timer(0.25, interrupt)
    time.sleep(0.1)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        committer.submit(3)
    assert 3 in commit.durable  # raised only after its group's commit
    for thread in (first, leader, last):
        thread.join(timeout=5)
        assert not thread.is_alive()
    assert results == {1: 10, 2: 20, 4: 40}
    assert [sorted(group) for group in commit.groups] == [[1], [2, 3, 4]]


class Reentered(Exception):
    pass


@pytest.mark.timeout(20)
@pytest.mark.parametrize("role", ["alone", "leader", "follower"])
def test_a_submit_from_inside_a_submit_of_the_same_thread_fails_at_once(role: str) -> None:
    # A signal handler that records, run while its thread commits (or waits for its
    # group), waited for itself for good. It now fails at once; the submit under it
    # still commits.
    commit = Committer(seconds=0.3)
    committer = GroupCommitter(commit, gather_seconds=0.05, reentered=Reentered)
    inner: list[BaseException] = []

    def handler(signum: int, frame: object) -> None:
        try:
            committer.submit(99)
        except Reentered as exc:
            inner.append(exc)

    previous = signal.signal(signal.SIGUSR1, handler)
    other = None
    try:
        if role != "alone":  # another thread commits first (follower) or waits for us
            other = threading.Timer(0.0 if role == "follower" else 0.02, committer.submit, (1,))
            other.start()
            time.sleep(0.1 if role == "follower" else 0.0)
        threading.Timer(
            0.15, signal.pthread_kill, (threading.main_thread().ident, signal.SIGUSR1)
        ).start()
        assert committer.submit(7) == 70
    finally:
        if other is not None:
            other.join(timeout=5)
        signal.signal(signal.SIGUSR1, previous)
    assert len(inner) == 1
    assert 7 in commit.durable
    assert 99 not in commit.durable
    groups = [sorted(group) for group in commit.groups]
    assert groups == {"alone": [[7]], "leader": [[7], [1]], "follower": [[1], [7]]}[role]
