"""Shared fixtures: a journal in a temporary folder, quiet logs that tests can inspect, the
power-cut shim."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from _powercut import build_shim

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


@pytest.fixture(scope="session")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The power-cut shim (tests/powercut/shim.c), compiled once for the session."""
    built = build_shim(tmp_path_factory.mktemp("powercut"))
    if built is None:
        pytest.skip("simulating a power cut preloads a shim: it needs Linux and a C compiler")
    return built
