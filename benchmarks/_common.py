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


def cpu_times() -> list[int]:
    """The machine's CPU time counters (user, nice, system, idle, iowait, irq, softirq,
    steal, ...), or none off Linux."""
    try:
        with open("/proc/stat") as handle:
            return [int(v) for v in handle.readline().split()[1:]]
    except OSError:
        return []


def stolen(before: list[int], after: list[int]) -> float:
    """The share of CPU time the hypervisor took away between two readings: time a
    program cannot use, and stalls that show in latencies (NaN off Linux)."""
    if len(before) < 8 or len(after) < 8:
        return float("nan")
    spent = [b - a for a, b in zip(before, after, strict=False)]
    return spent[7] / max(1, sum(spent))


class Steal:
    """The share of CPU time the hypervisor takes while a benchmark runs: on a shared VM
    it slows every contender, and a ratio measured under heavy steal says more about the
    machine than about csvjournal."""

    def __init__(self) -> None:
        self._start = cpu_times()

    def report(self) -> str:
        """One line for the benchmark's output."""
        share = stolen(self._start, cpu_times())
        return f"CPU stolen by the hypervisor during the run: {share:.1%}"
