"""Ctrl-C in the main thread while it records: the handle stays whole, other threads never
see the interrupt, nothing is lost. A real process under a storm of real SIGINTs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import csvjournal

pytestmark = pytest.mark.slow

# The main thread and three others record for 1.5 s while a thread sends SIGINT to the
# process every 2 ms; the main thread carries on after each KeyboardInterrupt.
STORM = """\
import json, os, signal, sys, threading, time
import structlog
import csvjournal

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
journal = csvjournal.open(sys.argv[1], key="K", busy_timeout=2)
stop = threading.Event()
others = {"done": [], "errors": []}

def ctrl_c():
    while not stop.is_set():
        time.sleep(0.002)
        os.kill(os.getpid(), signal.SIGINT)

def record(name):
    n = 0
    while not stop.is_set():
        n += 1
        try:
            journal.record(f"{name}-{n}", "COMPLETED")
            others["done"].append(f"{name}-{n}")
        except BaseException as exc:
            others["errors"].append(repr(exc))

threads = [threading.Thread(target=record, args=(f"t{i}",)) for i in range(3)]
for thread in threads:
    thread.start()
threading.Thread(target=ctrl_c, daemon=True).start()
done, interrupted, errors = [], 0, []
end = time.monotonic() + 1.5
n = 0
while time.monotonic() < end:
    n += 1
    try:
        journal.record(f"main-{n}", "COMPLETED")
        done.append(f"main-{n}")
    except KeyboardInterrupt:
        interrupted += 1
    except Exception as exc:
        errors.append(repr(exc))
stop.set()
signal.signal(signal.SIGINT, signal.SIG_IGN)
for thread in threads:
    thread.join()
journal.record("after", "COMPLETED")
journal.close()
print(json.dumps({"done": done + others["done"] + ["after"], "interrupted": interrupted,
                  "errors": errors, "other_errors": others["errors"]}))
"""


def test_ctrl_c_while_recording_leaves_the_handle_whole_and_other_threads_alone(
    tmp_path: Path,
) -> None:
    csv_path = tmp_path / "storm.csv"
    out = _run_script(tmp_path, STORM, str(csv_path))
    outcome = json.loads(out.splitlines()[-1])
    assert outcome["interrupted"] > 0, "no SIGINT reached a record()"
    assert outcome["errors"] == []  # no foreign error: a KeyboardInterrupt, or nothing
    assert outcome["other_errors"] == []  # the other threads never see the interrupt
    rows = {line.split(",")[0] for line in csv_path.read_text().splitlines()[1:]}
    assert set(outcome["done"]) <= rows  # every record that returned is in the CSV


# An application's own SIGINT handler that raises is not held off: its exception may land
# mid-commit. The handle rolls the half-begun transaction back at its next commit.
OWN_HANDLER = """\
import os, signal, sys, threading, time
import structlog
import csvjournal

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

class Stop(Exception):
    pass

def stop(signum, frame):
    raise Stop

signal.signal(signal.SIGINT, stop)
journal = csvjournal.open(sys.argv[1], key="K", busy_timeout=3)

def pester():
    time.sleep(0.3)  # the main thread is recording by then
    for _ in range(300):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.005)

threading.Thread(target=pester, daemon=True).start()
stops, end, n = 0, time.monotonic() + 2.0, 0
while time.monotonic() < end:
    try:
        journal.record(f"K{n % 50}", "DONE")
        n += 1
    except Stop:
        stops += 1
signal.signal(signal.SIGINT, signal.SIG_IGN)
journal.record("after", "DONE")
journal.close()
print("ok", stops)
"""


def test_an_applications_own_raising_handler_never_leaves_the_handle_stuck(
    tmp_path: Path,
) -> None:
    out = _run_script(tmp_path, OWN_HANDLER, str(tmp_path / "own.csv"))
    assert out.startswith("ok "), out


# batch() under a storm of Ctrl-C: a block is all or nothing, the handle stays whole
BATCH_STORM = """\
import json, os, signal, sys, threading, time
import structlog
import csvjournal

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
journal = csvjournal.open(sys.argv[1], key="K", durability=sys.argv[2], busy_timeout=2)
stop = threading.Event()
armed = False  # Ctrl-C raises inside the tries only: one between them would end the script

def interrupt(signum, frame):
    if armed:
        raise KeyboardInterrupt

signal.signal(signal.SIGINT, interrupt)

def ctrl_c():
    while not stop.is_set():
        time.sleep(0.0003)
        os.kill(os.getpid(), signal.SIGINT)

threading.Thread(target=ctrl_c, daemon=True).start()
blocks, interrupted, records, errors = [], [], [], []
end, n = time.monotonic() + 1.5, 0
while time.monotonic() < end:
    n += 1
    try:
        armed = True
        with journal.batch():
            journal.record(f"b{n}-1", "COMPLETED")
            with journal.batch():
                journal.record(f"b{n}-2", "COMPLETED")
        armed = False
        blocks.append(n)
    except KeyboardInterrupt:
        armed = False
        interrupted.append(n)
    except Exception as exc:
        armed = False
        errors.append(repr(exc))
    try:
        armed = True
        journal.record(f"r{n}", "COMPLETED")
        armed = False
        records.append(f"r{n}")
    except KeyboardInterrupt:
        armed = False
    except Exception as exc:
        armed = False
        errors.append(repr(exc))
stop.set()
signal.signal(signal.SIGINT, signal.SIG_IGN)
left_open = len(journal._batches)
journal.record("after", "COMPLETED")
journal.close()
print(json.dumps({"blocks": blocks, "interrupted": interrupted, "records": records,
                  "errors": errors, "left_open": left_open}))
"""


@pytest.mark.parametrize("durability", ["full", "normal"])
def test_ctrl_c_storm_on_batches_leaves_each_block_whole_and_the_handle_working(
    tmp_path: Path, durability: str
) -> None:
    csv_path = tmp_path / "storm.csv"
    out = _run_script(tmp_path, BATCH_STORM, str(csv_path), durability)
    outcome = json.loads(out.splitlines()[-1])
    assert outcome["interrupted"], "no SIGINT reached a batch()"
    assert outcome["errors"] == []  # a KeyboardInterrupt, or nothing
    assert outcome["left_open"] == 0  # (an unlucky one left a dead batch behind)
    with csvjournal.open(csv_path, export=False) as journal:  # as another process sees it
        keys = set(journal.to_dataframe()["K"])
    assert "after" in keys  # (a record after a dead batch went nowhere)
    assert set(outcome["records"]) <= keys
    for n in outcome["blocks"]:
        assert {f"b{n}-1", f"b{n}-2"} <= keys
    for n in outcome["interrupted"]:  # all or nothing (the commit's own write: see README)
        assert (f"b{n}-1" in keys) == (f"b{n}-2" in keys)


# Other signals an application handles: a timeout's SIGALRM that raises, while other
# threads record too
ALARMS = """\
import json, signal, sys, threading, time
import structlog
import csvjournal

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

class Alarm(Exception):
    pass

armed = False  # the alarm raises inside record() calls only: the script stays whole

def alarm(signum, frame):
    if armed:
        raise Alarm

signal.signal(signal.SIGALRM, alarm)
journal = csvjournal.open(sys.argv[1], key="K", busy_timeout=3)
stop = threading.Event()
others = {"done": [], "errors": []}

def record(name):
    n = 0
    while not stop.is_set():
        n += 1
        try:
            journal.record(f"{name}-{n}", "COMPLETED")
            others["done"].append(f"{name}-{n}")
        except BaseException as exc:
            others["errors"].append(repr(exc))

threads = [threading.Thread(target=record, args=(f"t{i}",)) for i in range(2)]
for thread in threads:
    thread.start()
signal.setitimer(signal.ITIMER_REAL, 0.0007, 0.0007)
done, alarms, errors, end, n = [], 0, [], time.monotonic() + 1.5, 0
while time.monotonic() < end:
    n += 1
    try:
        armed = True
        journal.record(f"main-{n}", "COMPLETED")
        armed = False
        done.append(f"main-{n}")
    except Alarm:
        armed = False
        alarms += 1
    except Exception as exc:
        armed = False
        errors.append(repr(exc))
signal.setitimer(signal.ITIMER_REAL, 0)
stop.set()
for thread in threads:
    thread.join()
journal.record("after", "COMPLETED")
journal.close()
print(json.dumps({"done": done + others["done"] + ["after"], "alarms": alarms,
                  "errors": errors, "other_errors": others["errors"]}))
"""


def test_a_timeouts_raising_alarm_never_wedges_the_handle_nor_fails_other_threads(
    tmp_path: Path,
) -> None:
    csv_path = tmp_path / "alarms.csv"
    out = _run_script(tmp_path, ALARMS, str(csv_path))
    outcome = json.loads(out.splitlines()[-1])
    assert outcome["alarms"] > 0, "no alarm reached a record()"
    assert outcome["errors"] == []
    assert outcome["other_errors"] == []  # (the main thread's Alarm reached them)
    rows = {line.split(",")[0] for line in csv_path.read_text().splitlines()[1:]}
    assert set(outcome["done"]) <= rows


# A service's SIGTERM handler that exits: the process ends, nothing that returned is lost
TERMINATED = """\
import signal, sys
import structlog
import csvjournal

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
journal = csvjournal.open(sys.argv[1], key="K")
with open(sys.argv[2], "w") as report:
    n = 0
    while True:
        n += 1
        journal.record(f"k{n}", "COMPLETED")
        report.write(f"k{n}\\n")
        report.flush()
"""


@pytest.mark.parametrize("attempt", range(3))
def test_a_sigterm_handler_that_exits_ends_the_process_and_loses_nothing(
    tmp_path: Path, attempt: int
) -> None:
    script = tmp_path / "terminated.py"
    script.write_text(TERMINATED)
    csv_path, report = tmp_path / "t.csv", tmp_path / "report.txt"
    child = subprocess.Popen(
        [sys.executable, str(script), str(csv_path), str(report)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(_lines(report)) < 50 * (attempt + 1):
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.01)
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=20) == 143  # (one in three still ran after 20 s)
    finally:
        child.kill()
        child.wait()
    reported = _lines(report)
    with csvjournal.open(csv_path, export=False) as journal:
        keys = set(journal.to_dataframe()["K"])
    assert set(reported) <= keys


def _lines(report: Path) -> list[str]:
    if not report.exists():
        return []
    return report.read_text().split("\n")[:-1]


# A raising handler held off during a claim's commit: the rows it took stay the handle's
CLAIMS = """\
import json, signal, sys, time
import structlog
import csvjournal

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

class Alarm(Exception):
    pass

armed = False

def alarm(signum, frame):
    if armed:
        raise Alarm

signal.signal(signal.SIGALRM, alarm)
journal = csvjournal.open(sys.argv[1], key="K", durability="normal")
signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
alarms, end = 0, time.monotonic() + 0.5
while time.monotonic() < end:
    try:
        armed = True
        journal.claim(1, lease=600)
        armed = False
    except Alarm:
        armed = False
        alarms += 1
signal.setitimer(signal.ITIMER_REAL, 0)
journal.close()
print(json.dumps({"alarms": alarms}))
"""


def test_a_claim_cut_short_by_a_held_signal_keeps_its_rows_the_handles(tmp_path: Path) -> None:
    # Its rows were committed IN_PROGRESS, never returned, and close() did not give them
    # back: held for the whole lease.
    csv_path = tmp_path / "rows.csv"
    csv_path.write_text("K\n" + "".join(f"{n}\n" for n in range(3000)))
    out = _run_script(tmp_path, CLAIMS, str(csv_path))
    assert json.loads(out.splitlines()[-1])["alarms"] > 0
    with csvjournal.open(csv_path, export=False) as journal:
        assert journal.counts().get("IN_PROGRESS", 0) == 0


# A one-shot handler (it installs another) whose signal comes while a block commits
ONE_SHOT = """\
import os, signal, sys, threading, time
import structlog
import csvjournal

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

def second(signum, frame):
    pass

journal = csvjournal.open(sys.argv[1], key="K", durability="normal")
stop = threading.Event()

def pester():
    while not stop.is_set():
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.0005)

signal.signal(signal.SIGUSR1, second)
threading.Thread(target=pester, daemon=True).start()
end, n, blocks, stale = time.monotonic() + 1.5, 0, 0, 0
while time.monotonic() < end:
    ran = []

    def first(signum, frame):
        ran.append(1)
        signal.signal(signal.SIGUSR1, second)

    signal.signal(signal.SIGUSR1, first)
    with journal.batch():
        for _ in range(2000):
            n += 1
            journal.record(f"k{n}")
    blocks += 1
    if ran and signal.getsignal(signal.SIGUSR1) is not second:
        stale += 1
stop.set()
journal.close()
print(blocks, stale)
"""


def test_a_handler_that_installs_another_keeps_it_across_a_blocks_commit(tmp_path: Path) -> None:
    # The handlers held off were put back over the one the first handler installed.
    out = _run_script(tmp_path, ONE_SHOT, str(tmp_path / "one.csv"))
    blocks, stale = map(int, out.split())
    assert blocks > 0
    assert stale == 0


# A raising handler whose signal comes while close() writes the last records
CLOSING = """\
import json, signal, sys
import structlog
import csvjournal

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

class Alarm(Exception):
    pass

armed = False  # the alarm raises inside close() calls only: the script stays whole

def alarm(signum, frame):
    if armed:
        raise Alarm

journal = csvjournal.open(sys.argv[1], key="K", durability="normal")
with journal.batch():
    for n in range(20000):
        journal.record(f"k{n}", "DONE")
signal.signal(signal.SIGALRM, alarm)
signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
alarms = 0
for _ in range(3):
    try:
        armed = True
        journal.close()
        armed = False
    except Alarm:
        armed = False
        alarms += 1
signal.setitimer(signal.ITIMER_REAL, 0)
print(json.dumps({"alarms": alarms}))
"""


def test_close_cut_short_by_a_signal_still_writes_the_csv_and_removes_its_files(
    tmp_path: Path,
) -> None:
    # close() was left half done (the CSV behind, -wal/-shm left), and every later close(),
    # the one at exit too, did nothing.
    csv_path = tmp_path / "c.csv"
    out = _run_script(tmp_path, CLOSING, str(csv_path))
    assert json.loads(out.splitlines()[-1])["alarms"] >= 1
    assert len(csv_path.read_text().splitlines()) == 20001
    assert not Path(f"{csv_path}.journal-wal").exists()
    assert not Path(f"{csv_path}.journal-shm").exists()


def _run_script(tmp_path: Path, source: str, *args: str) -> str:
    """Run ``source`` as a script in a process of its own; return its stdout (it must
    end with status 0)."""
    script = tmp_path / "script.py"
    script.write_text(source)
    done = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout
