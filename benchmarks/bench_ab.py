"""record() of this checkout against another revision's, side by side in one process run.

Whole runs of ``bench_record.py`` drift by more than most changes to ``record()``'s path
gain or cost (the VM's fsync time moves from minute to minute), and two processes never
see the same minutes. Here both versions run in one process: the other revision's package
is copied out of git under another name (``csvjournal_<rev>``), and raw sqlite3, that
copy and this checkout take turns, round after round in a rotating order, each on a
journal of its own. Prints each one's rate over raw's in the same rounds and the new
code's over the old's (time-weighted, and the median of the rounds).

    python benchmarks/bench_ab.py --against HEAD~1 [--threads 8] [--rounds 200]
"""

from __future__ import annotations

import argparse
import importlib
import io
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType

from _common import quiet_logs
from bench_record import RawSqlite, Single, Threads

REPO = Path(__file__).resolve().parent.parent


def _copy_of(revision: str, into: Path) -> ModuleType:
    """The package as it was at ``revision``, imported as ``csvjournal_<sha>``."""
    sha = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", revision],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    name = f"csvjournal_{sha}"
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", revision, "csvjournal", "migrations"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    package = into / name
    (into / "csvjournal").rename(package)
    # where an installed wheel keeps them (see csvjournal._migrate)
    (into / "migrations").rename(package / "_migrations")
    for path in package.rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        source = re.sub(r"\bcsvjournal\.", f"{name}.", source)
        source = source.replace("from csvjournal import", f"from {name} import")
        source = re.sub(r"^import csvjournal$", f"import {name} as csvjournal", source, flags=re.M)
        path.write_text(source, encoding="utf-8")
    sys.path.insert(0, str(into))
    return importlib.import_module(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="the git revision to compare with")
    parser.add_argument("--threads", type=int, choices=[1, 8], default=1)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--chunk", type=int, default=100, help="records a thread's turn")
    args = parser.parse_args()
    quiet_logs()
    base = Path(tempfile.mkdtemp(prefix="csvj-ab-"))
    kind = Single if args.threads == 1 else Threads
    contenders: dict[str, RawSqlite | Single | Threads] = {}
    try:
        old = _copy_of(args.against, base / "old")
        contenders["raw sqlite3"] = RawSqlite(base, "full")
        contenders[args.against] = kind(base, "full", export=False, package=old)
        contenders["this checkout"] = kind(base, "full", export=False)
        seconds: dict[str, list[float]] = {name: [] for name in contenders}
        order = list(contenders)
        for number in range(args.rounds):
            for name in order[number % len(order) :] + order[: number % len(order)]:
                contender = contenders[name]
                seconds[name].append(contender.run(args.chunk * contender.threads))
    finally:
        for contender in contenders.values():
            contender.close()
        shutil.rmtree(base, ignore_errors=True)
    raw = seconds["raw sqlite3"]
    print(
        f"{args.threads} thread(s), durability=full;"
        f" {args.rounds} rounds of {args.chunk} records a thread"
    )
    print("| contender | records/s | × raw: time-weighted | × raw: median of the rounds |")
    print("|---|---:|---:|---:|")
    for name, times in seconds.items():
        threads = 1 if name == "raw sqlite3" else args.threads
        ratios = [threads * r / t for r, t in zip(raw, times, strict=True)]
        print(
            f"| {name} | {args.chunk * threads * len(times) / sum(times):,.0f} |"
            f" {threads * sum(raw) / sum(times):.3f} | {statistics.median(ratios):.3f} |"
        )
    before, after = seconds[args.against], seconds["this checkout"]
    gains = [b / a for b, a in zip(before, after, strict=True)]
    print(
        f"this checkout × {args.against}: {sum(before) / sum(after):.3f} time-weighted,"
        f" {statistics.median(gains):.3f} the median of the rounds"
    )


if __name__ == "__main__":
    main()
