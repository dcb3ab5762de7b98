"""What a group commit commits: each call validated alone, the group in one transaction."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

import csvjournal
from csvjournal._groupcommit import Refused
from csvjournal._writer import RecordCall


def _call(key: str, **more: object) -> RecordCall:
    return RecordCall(key, "COMPLETED", None, more, "test-worker")


def test_a_group_commits_its_valid_calls_and_refuses_the_others(csv_path: Path) -> None:
    with csvjournal.open(csv_path, key="ID", export=False) as journal:
        calls = [_call("a", N=1), _call("b", BAD={1}), _call(""), _call("c", N=3)]
        results = journal._commits.commit_group(calls)
        assert isinstance(results[0], int)
        assert isinstance(results[3], int)
        assert results[3] > results[0]
        assert isinstance(results[1], Refused)
        assert isinstance(results[1].error, TypeError)
        assert "BAD" in str(results[1].error)
        assert isinstance(results[2], Refused)
        assert isinstance(results[2].error, csvjournal.RecordError)
        assert journal.counts() == {"COMPLETED": 2}  # a and c, nothing of the others
        assert journal.columns == ["ID", "STATUS", "LAST_PROCESSED", "N"]


def test_a_failed_transaction_fails_the_valid_calls_and_keeps_the_refused_ones_errors(
    csv_path: Path,
) -> None:
    with csvjournal.open(csv_path, key="ID", export=False, busy_timeout=0.2) as journal:
        journal.record("a")
        with closing(sqlite3.connect(f"{csv_path}.journal", isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")  # another writer holds the journal
            results = journal._commits.commit_group([_call("b", BAD={1}), _call("c")])
            with pytest.raises(csvjournal.JournalBusyError):
                journal._commits.commit_group([_call("d")])  # nothing refused: it raises
            other.execute("ROLLBACK")
        assert isinstance(results[0], Refused)
        assert isinstance(results[0].error, TypeError)  # not the busy error
        assert isinstance(results[1], Refused)
        assert isinstance(results[1].error, csvjournal.JournalBusyError)
        assert journal.get("c") is None
        assert journal.get("d") is None
        journal.record("c")  # the journal goes on
        assert len(journal) == 2
