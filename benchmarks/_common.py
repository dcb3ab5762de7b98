"""What every benchmark shares: logging quieted to warnings, in this process and in the
child processes that the benchmarks start with ``python -c``."""

from __future__ import annotations

import logging

import structlog

# Prepended to a child process's script.
QUIET = (
    "import structlog, logging\n"
    "structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))\n"
)


def quiet_logs() -> None:
    """Log warnings and errors only (the benchmark's tables are its output)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
