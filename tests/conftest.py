"""Shared fixtures: a journal in a temporary folder, quiet logs that tests can inspect."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

import csvjournal


@pytest.fixture(autouse=True)
def _quiet_structlog() -> None:
    # The library never configures logging; tests keep its output off stdout, and every
    # level still reaches structlog.testing.capture_logs.
    structlog.reset_defaults()  # the CLI tests configure structlog as the CLI does
    structlog.configure(processors=[], logger_factory=structlog.ReturnLoggerFactory())


@pytest.fixture
def csv_path(tmp_path: Path) -> Path:
    """Where the CSV of a fresh journal lives (the CSV itself does not exist yet)."""
    return tmp_path / "orders.csv"


@pytest.fixture
def journal(csv_path: Path) -> Iterator[csvjournal.Journal]:
    """A new journal keyed by PO_NUMBER, closed after the test."""
    with csvjournal.open(csv_path, key="PO_NUMBER", terminal={"COMPLETED", "NO_ATTACHMENTS"}) as j:
        yield j
