"""The scripts that ``bench_recover.py`` runs in child processes: the job that gets killed
(an exporting process and claiming workers), the measurement, and the sqlite3 floor."""

from __future__ import annotations

import textwrap

from _common import QUIET

# The job that gets killed: one exporting process, and workers that claim and record.
EXPORTER = QUIET + textwrap.dedent(
    """
    import sys, time, csvjournal
    journal = csvjournal.open(sys.argv[1])
    print("ready", flush=True)
    while True:
        time.sleep(60)
    """
)
WORKER = QUIET + textwrap.dedent(
    """
    import os, sys, csvjournal
    path, lease = sys.argv[1], float(sys.argv[2])
    journal = csvjournal.open(path, export=False, durability="full")
    print("ready", flush=True)
    n = 0
    while True:
        for key in journal.claim(10, lease=lease):
            journal.record(key, "COMPLETED", NOTE=f"done by {os.getpid()}", ERROR_MESSAGE="")
            n += 1
            if n % 500 == 0:
                print(n, flush=True)
    """
)

# The measurement, in a fresh process: the three calls, and inside them the steps that
# matter, timed by wrapping csvjournal's internals (a name that moved is just not timed).
MEASURE = textwrap.dedent(
    """
    import time
    t_start = time.perf_counter()
    import importlib, json, logging, sys, structlog
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    import csvjournal
    t_import = time.perf_counter()
    STEPS = [
        ("csvjournal._handle", "Store", "store open"),
        ("csvjournal._handle", "take_backup", "session backup"),
        ("csvjournal._handle", "check_integrity", "integrity check (in a thread)"),
        ("csvjournal.journal", "check_integrity", "integrity_check"),
        ("csvjournal._handle.Handle", "_expire_leases", "expire leases"),
        ("csvjournal.exporter", "remove_temp_files", "remove temp files"),
        ("csvjournal.exporter", "check_csv", "hand-edit check (hash CSV)"),
        ("csvjournal._rendercache.RenderedCsv", "seed", "rendering seeded from the CSV"),
        ("csvjournal.exporter.Exporter", "export_now", "export"),
        ("csvjournal._rendercache.RenderedCsv", "refresh", "export: render rows"),
        ("csvjournal.exporter", "write_temp", "export: write temp CSV"),
        ("csvjournal._flush", "flush_csv", "flush"),
    ]
    phase = "open"
    steps = {}

    def timed(label, func):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                key = f"{phase}: {label}"
                steps[key] = steps.get(key, 0.0) + time.perf_counter() - started
        return wrapper

    def resolve(where):
        parts = where.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                owner = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            for attr in parts[cut:]:
                owner = getattr(owner, attr, None)
            return owner
        return None

    for where, name, label in STEPS:
        owner = resolve(where)
        if owner is not None and hasattr(owner, name):
            setattr(owner, name, timed(label, getattr(owner, name)))

    csv_path, keep = sys.argv[1], int(sys.argv[2])
    t0 = time.perf_counter()
    journal = csvjournal.open(csv_path, keep_backups=keep)
    t1 = time.perf_counter()
    phase = "recover"
    report = journal.recover()
    t2 = time.perf_counter()
    phase = "pending"
    keys = journal.pending()
    t3 = time.perf_counter()
    phase = "close"
    journal.close()
    t4 = time.perf_counter()
    print(json.dumps({
        "import": t_import - t_start, "open": t1 - t0, "recover": t2 - t1,
        "pending": t3 - t2, "close": t4 - t3, "total": t3 - t0, "steps": steps,
        "pending_rows": len(keys), "expired": len(report.expired),
        "temp_files_removed": len(report.temp_files_removed),
        "csv_was_stale": report.csv_was_stale,
    }))
    """
)


# The floor: what the same work costs in Python's sqlite3 alone, in a fresh process.
FLOOR = textwrap.dedent(
    """
    import json, sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1])
    out = {}
    for name, sql in (
        ("open + count(*)", "SELECT count(*) FROM rows"),
        ("PRAGMA quick_check", "PRAGMA quick_check"),
        ("PRAGMA integrity_check", "PRAGMA integrity_check"),
        ("SELECT line ORDER BY pos (an export's reading)", "SELECT line FROM rows ORDER BY pos"),
        (
            "SELECT pos, line, cells ORDER BY pos (what open's export reads)",
            "SELECT pos, line, cells FROM rows ORDER BY pos",
        ),
    ):
        started = time.perf_counter()
        conn.execute(sql).fetchall()
        out[name] = time.perf_counter() - started
    started = time.perf_counter()
    keys = [k for (k,) in conn.execute(
        "SELECT key FROM rows WHERE done = 0 AND (lease_until IS NULL OR lease_until <= ?)"
        " ORDER BY pos", (time.time(),))]
    out["pending keys as a list"] = time.perf_counter() - started
    print(json.dumps(out))
    """
)
