"""csvjournal's locks are POSIX file locks (``fcntl``): where there are none (Windows),
importing the package says so rather than "No module named 'fcntl'"."""

from __future__ import annotations

try:
    import fcntl
except ImportError as exc:  # pragma: no cover - only where fcntl is missing
    raise ImportError(
        "csvjournal needs a POSIX system (Linux, macOS, BSD): its exporter lock and writers'"
        " queue are POSIX file locks, which this system lacks"
    ) from exc

__all__ = ["fcntl"]
