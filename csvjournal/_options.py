"""The arguments of :func:`csvjournal.open`, as one value a handle can be rebuilt from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from csvjournal.store import Durability

__all__ = ["Options"]


@dataclass(frozen=True, slots=True)
class Options:
    """Everything ``open()`` was given, normalised; what a reopened handle is made from."""

    csv_path: Path
    journal_path: Path
    key: str | None
    export: bool
    durability: Durability
    terminal: frozenset[str] | None
    status_column: str
    timestamp_column: str
    busy_timeout: float
    encoding: str | None = None
    formula_guard: bool | None = None  # None: as the journal stored it
    allow_network_fs: bool = False
    keep_backups: int = 5
    # reopened in a worker process the journal was passed to (see csvjournal._orphans)
    worker_copy: bool = False
