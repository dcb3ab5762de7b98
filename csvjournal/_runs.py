"""The ``run`` processes of a journal on this machine: which of them are gone.

A ``run`` killed outright (kill -9) leaves its rows leased for the lease's length (300 s
by default). Its worker names say ``host:pid:run-N``, but a process id alone does not
prove the run gone: a run in another PID namespace (a container sharing the folder and
the host name) is invisible here, though alive. So each run notes itself in the journal
(setting ``runs``): its process id, when that process started, its PID namespace and the
machine's boot. A later run in the same namespace and boot finds a noted run gone when no
process started then has its id any more; a run noted in another namespace is never
taken for gone (its rows wait for their leases), one noted before the machine's last boot
always is.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from pathlib import Path

from csvjournal._leases import leased_to, release_rows
from csvjournal._pids import pid_namespace, start_ticks
from csvjournal._writer import Writer

__all__ = ["forget_run", "note_run_and_free_gone"]

_SETTING = "runs"
_READ = "SELECT value FROM settings WHERE name = ?"
_WRITE = """
INSERT INTO settings (name, value) VALUES (?, ?)
ON CONFLICT (name) DO UPDATE SET value = excluded.value
"""


def _here() -> dict[str, object] | None:
    """This process as a run notes itself; None where ``/proc`` cannot say enough."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    ticks, namespace = start_ticks(os.getpid()), pid_namespace()
    if ticks is None or namespace is None:
        return None
    return {"pid": os.getpid(), "ticks": ticks, "namespace": list(namespace), "boot": boot}


def _gone(run: dict[str, object], here: dict[str, object]) -> bool:
    if run.get("boot") != here["boot"]:
        return True  # noted before the machine's last boot
    if run.get("namespace") != here["namespace"] or run.get("pid") == here["pid"]:
        return False  # another namespace's processes are out of sight
    pid = run.get("pid")
    return isinstance(pid, int) and start_ticks(pid) != run.get("ticks")


def _runs(conn: sqlite3.Connection) -> dict[str, dict[str, object]]:
    row = conn.execute(_READ, (_SETTING,)).fetchone()
    found = json.loads(row[0]) if row is not None else {}
    return found if isinstance(found, dict) else {}


def note_run_and_free_gone(
    conn: sqlite3.Connection, writer: Writer, *, now: float, at: str, worker: str
) -> list[tuple[str, str, int]]:
    """In a write transaction: return to ``PENDING``, the attempt counted, the rows held by
    runs of this machine that are gone, forget those runs, and note this one. Return
    ``(key, holder, event)`` for each row returned."""
    here = _here()
    if here is None:
        return []
    host = socket.gethostname()
    runs = _runs(conn)
    returned: list[tuple[str, str, int]] = []
    for name, run in list(runs.items()):
        if not name.startswith(f"{host}:") or not _gone(run, here):
            continue
        held = leased_to(conn, f"{name}:run-", now)
        for holder in dict.fromkeys(holder for _, holder in held):
            returned += release_rows(
                conn,
                writer,
                [pair for pair in held if pair[1] == holder],
                at=at,
                worker=worker,
                note=f"lease of {holder} returned: its run is gone",
                counted=True,
            )
        del runs[name]
    runs[f"{host}:{here['pid']}"] = here
    conn.execute(_WRITE, (_SETTING, json.dumps(runs)))
    return returned


def forget_run(conn: sqlite3.Connection, _writer: Writer) -> None:
    """In a write transaction: forget this process's run (it ended)."""
    runs = _runs(conn)
    if runs.pop(f"{socket.gethostname()}:{os.getpid()}", None) is not None:
        conn.execute(_WRITE, (_SETTING, json.dumps(runs)))
