"""The application's signal handlers stay its own around every held region.

Holding signals swaps each handler for a note-taker and puts it back after; a signal that
came just before can run its handler in the middle of that swap (``signal()`` runs the
handlers of signals already come). These tests hammer those moments with real signals in
real processes and check that Ctrl-C and the application's handlers still work after.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def _run(tmp_path: Path, source: str, *args: str) -> dict[str, object]:
    script = tmp_path / "script.py"
    script.write_text(source)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "j.csv"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outcome: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return outcome


# A timeout's SIGALRM that raises, every 0.3 ms, while the main thread records (or records
# in blocks): the handlers of SIGINT and SIGTERM must be the application's after each call.
ALARM_STORM = """\
import json, os, signal, sys, time
import structlog, logging
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
import csvjournal

class Timeout(Exception):
    pass

armed = False
def on_alarm(signum, frame):
    if armed:
        raise Timeout

def on_term(signum, frame):
    sys.exit(143)

signal.signal(signal.SIGALRM, on_alarm)
signal.signal(signal.SIGTERM, on_term)
journal = csvjournal.open(sys.argv[1], key="K", durability="normal", keep_backups=0)
blocks = sys.argv[2] == "batch"
signal.setitimer(signal.ITIMER_REAL, 0.0001, 0.0003)
n, timeouts, replaced, end = 0, 0, [], time.monotonic() + 1.5
while time.monotonic() < end and not replaced:
    n += 1
    try:
        armed = True
        if blocks:
            with journal.batch():
                journal.record(f"k{n}", "DONE")
                journal.record(f"l{n}", "DONE")
        else:
            journal.record(f"k{n}", "DONE")
        armed = False
    except Timeout:
        armed = False
        timeouts += 1
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        replaced.append(f"SIGINT after {n} calls: {signal.getsignal(signal.SIGINT)!r}")
    if signal.getsignal(signal.SIGTERM) is not on_term:
        replaced.append(f"SIGTERM after {n} calls: {signal.getsignal(signal.SIGTERM)!r}")
signal.setitimer(signal.ITIMER_REAL, 0)
signal.signal(signal.SIGALRM, signal.SIG_IGN)
ctrl_c = False
try:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(1)
except KeyboardInterrupt:
    ctrl_c = True
journal.close()
print(json.dumps({"calls": n, "timeouts": timeouts, "replaced": replaced, "ctrl_c": ctrl_c}))
"""


@pytest.mark.parametrize("mode", ["record", "batch"])
def test_a_raising_alarm_storm_never_leaves_the_applications_handlers_replaced(
    tmp_path: Path, mode: str
) -> None:
    outcome = _run(tmp_path, ALARM_STORM, mode)
    assert outcome["timeouts"], "no alarm raised in a call"
    assert outcome["replaced"] == []
    assert outcome["ctrl_c"], "Ctrl-C was swallowed"
