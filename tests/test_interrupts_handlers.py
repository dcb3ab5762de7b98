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

import csvjournal


def _spawn(tmp_path: Path, source: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``source`` as a script in a process of its own, on ``tmp_path/j.csv``; it must
    end with status 0."""
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
    return done


def _run(tmp_path: Path, source: str, *args: str) -> dict[str, object]:
    """:func:`_spawn`; the JSON document its last line prints."""
    done = _spawn(tmp_path, source, *args)
    outcome: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return outcome


# A timeout's SIGALRM that raises, every millisecond, while the main thread records (or records
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
signal.setitimer(signal.ITIMER_REAL, 0.0001, 0.001)
n, timeouts, end = 0, 0, time.monotonic() + 1.5
while time.monotonic() < end:
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
signal.setitimer(signal.ITIMER_REAL, 0)
signal.signal(signal.SIGALRM, signal.SIG_IGN)
journal.record("last", "DONE")  # (the next hold puts back what an unlucky one left)
replaced = [
    repr(signal.getsignal(signum))
    for signum, handler in [(signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, on_term)]
    if signal.getsignal(signum) is not handler
]
ctrl_c = term = False
try:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(1)
except KeyboardInterrupt:
    ctrl_c = True
try:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(1)
except SystemExit:
    term = True
journal.close()
print(json.dumps({"calls": n, "timeouts": timeouts, "replaced": replaced, "ctrl_c": ctrl_c,
                  "term": term}))
"""


@pytest.mark.parametrize("mode", ["record", "batch"])
def test_a_raising_alarm_storm_never_leaves_the_applications_handlers_replaced(
    tmp_path: Path, mode: str
) -> None:
    outcome = _run(tmp_path, ALARM_STORM, mode)
    assert outcome["timeouts"], "no alarm raised in a call"
    assert outcome["replaced"] == []
    assert outcome["ctrl_c"], "Ctrl-C was swallowed"
    assert outcome["term"], "SIGTERM was swallowed"


# Handlers that write to the journal themselves.
HANDLER_RECORDS = """\
import json, os, signal, sys, threading, time
import structlog, logging
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
import csvjournal

journal = csvjournal.open(
    sys.argv[1], key="K", terminal={"COMPLETED", "DONE", "ALIVE"}, durability="normal",
    keep_backups=0,
)
beats = []

def heartbeat(signum, frame):
    beats.append(journal.record("heartbeat", "ALIVE", BEATS=len(beats) + 1))

signal.signal(signal.SIGALRM, heartbeat)
signal.signal(signal.SIGUSR1, heartbeat)
outcome = {}
if sys.argv[2] == "work":  # a heartbeat every 0.5 ms while a work() loop finishes rows
    with journal.batch():
        for n in range(3000):
            journal.record(f"w{n}")
    signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0005)
    done = 0
    for task in journal.work(lease=30):
        with task:
            done += 1
    signal.setitimer(signal.ITIMER_REAL, 0)
    outcome["done"] = done
else:  # one heartbeat as a block's body ends: it joins the block
    ending = threading.Event()
    def send():
        ending.wait()
        os.kill(os.getpid(), signal.SIGUSR1)
    threading.Thread(target=send).start()
    with journal.batch():
        for n in range(3000):
            journal.record(f"b{n}", "DONE", PAYLOAD="x" * 200)
        ending.set()
    time.sleep(0.2)
outcome["beats"] = len(beats)
outcome["rows"] = len(journal)
outcome["counts"] = journal.counts()
journal.close()
print(json.dumps(outcome))
"""


@pytest.mark.parametrize("where", ["work", "batch_end"])
def test_a_handler_that_records_never_deadlocks_nor_undoes_a_block(
    tmp_path: Path, where: str
) -> None:
    # In a work() loop it took the claims' lock a second time (a hang for good); as a
    # block ended, its record was refused as another task's, and undid the whole block.
    outcome = _run(tmp_path, HANDLER_RECORDS, where)
    assert outcome["beats"]
    if where == "work":
        assert outcome["done"] == 3000
        assert outcome["counts"] == {"COMPLETED": 3000, "ALIVE": 1}
    else:
        assert outcome["beats"] == 1
        assert outcome["counts"] == {"DONE": 3000, "ALIVE": 1}


# A SIGTERM handler that closes the journal and exits, inside a work() task.
CLOSE_AND_EXIT = """\
import os, signal, sys, threading
import structlog, logging
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
import csvjournal

journal = csvjournal.open(sys.argv[1], key="K", durability="normal", keep_backups=0)
journal.record("A")

def stop(signum, frame):
    journal.close()
    sys.exit(0)

signal.signal(signal.SIGTERM, stop)
for task in journal.work(lease=30):
    with task:
        os.kill(os.getpid(), signal.SIGTERM)
        threading.Event().wait(5)
print("not reached")
"""


def test_a_sigterm_handler_that_closes_and_exits_inside_a_task_exits_cleanly(
    tmp_path: Path,
) -> None:
    # The task's end gave the row back to a closed journal: JournalClosedError replaced
    # the SystemExit (exit status 1, a traceback).
    done = _spawn(tmp_path, CLOSE_AND_EXIT)
    assert "Traceback" not in done.stderr
    assert "not reached" not in done.stdout
    with csvjournal.open(tmp_path / "j.csv", export=False) as journal:
        assert journal.pending() == ["A"]  # given back by close()


# open() cut short at every moment by a handler that raises.
OPEN_CUT_SHORT = """\
import json, os, signal, sys, threading, time
import structlog, logging
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
import csvjournal

class Stop(Exception):
    pass

armed = False
def stop(signum, frame):
    if armed:
        raise Stop

signal.signal(signal.SIGUSR1, stop)
csv_path = sys.argv[1]
with open(csv_path, "w") as out:
    out.write("K,STATUS\\n" + "".join(f"w{n},\\n" for n in range(200)))
with csvjournal.open(csv_path, key="K", keep_backups=0) as journal:
    journal.record("w0", "DONE")
began = time.monotonic()
csvjournal.open(csv_path, key="K", keep_backups=0).close()
span = time.monotonic() - began  # the signal comes at every moment of an open, and after
opened = interrupted = 0
for step in range(150):
    journal = None
    timer = threading.Timer(span * step / 100, os.kill, (os.getpid(), signal.SIGUSR1))
    timer.start()
    try:
        armed = True
        journal = csvjournal.open(csv_path, key="K", keep_backups=0)
        armed = False
        opened += 1
    except Stop:
        armed = False
        interrupted += 1
    timer.join()
    if journal is not None:
        journal.close()
    left = [t.name for t in threading.enumerate() if t.name.startswith("csvjournal")]
    if left:
        break
folder = os.path.dirname(csv_path)
print(json.dumps({"opened": opened, "interrupted": interrupted, "threads": left,
                  "files": sorted(os.listdir(folder))}))
"""


def test_an_open_cut_short_by_a_signal_leaves_no_thread_nor_file_behind(tmp_path: Path) -> None:
    # A handler that raised as open() started the exporter left its thread running (and
    # the journal's -wal/-shm files, for good).
    outcome = _run(tmp_path, OPEN_CUT_SHORT)
    assert outcome["interrupted"]
    assert outcome["opened"]
    assert outcome["threads"] == []
    assert not [name for name in outcome["files"] if name.endswith(("-wal", "-shm"))]  # type: ignore[attr-defined]


# close() waiting for another thread's long block, and a SIGTERM handler that exits.
CLOSE_WAITS = """\
import json, os, signal, sys, threading, time
import structlog, logging
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
import csvjournal

journal = csvjournal.open(sys.argv[1], key="K", keep_backups=0)
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
inside = threading.Event()

def slow_block():
    with journal.batch():
        journal.record("slow", "DONE")
        inside.set()
        time.sleep(4)

worker = threading.Thread(target=slow_block)
worker.start()
inside.wait()
threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
began = time.monotonic()
try:
    journal.close()
    exited = None
except SystemExit as exc:
    exited = exc.code
waited = time.monotonic() - began
worker.join()
journal.close()  # takes the close up again: the block's record reaches the CSV
with open(sys.argv[1]) as sheet:
    shown = "slow" in sheet.read()
print(json.dumps({"exited": exited, "waited": waited, "shown": shown}))
"""


def test_a_sigterm_during_closes_wait_for_another_threads_block_is_handled_at_once(
    tmp_path: Path,
) -> None:
    # close() held SIGTERM and SIGALRM for as long as it waited: up to busy_timeout.
    outcome = _run(tmp_path, CLOSE_WAITS)
    assert outcome["exited"] == 143
    assert outcome["waited"] < 3  # the block lasts 4 s
    assert outcome["shown"]


# Reads (get) under a timeout's SIGALRM that raises every half millisecond.
READ_STORM = """\
import json, os, signal, sys, time
import structlog, logging
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
import csvjournal

journal = csvjournal.open(sys.argv[1], key="K", durability="normal", keep_backups=0)
journal.record("x", "DONE")
armed, raised = False, 0

def timeout(signum, frame):
    global raised
    if armed:
        raised += 1
        raise TimeoutError

signal.signal(signal.SIGALRM, timeout)
signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0005)
end = time.monotonic() + 3
while time.monotonic() < end:
    try:
        armed = True
        journal.get("x")
        armed = False
    except TimeoutError:
        armed = False
signal.setitimer(signal.ITIMER_REAL, 0)
began = time.monotonic()
journal.record("after", "DONE")
journal.close()
print(json.dumps({"raised": raised, "closed_in": time.monotonic() - began}))
"""


def test_reads_cut_short_by_a_raising_handler_leak_nothing_and_close_returns(
    tmp_path: Path,
) -> None:
    # A handler raising inside the connection pool's checkout or return leaked
    # connections, or left the pool's lock held: close() then waited for good.
    outcome = _run(tmp_path, READ_STORM)
    assert outcome["raised"]
    assert outcome["closed_in"] < 10


# Another thread forks while the main thread records (and so holds signals).
FORK_FROM_A_THREAD = """\
import json, os, signal, sys, threading, time
import structlog, logging
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
import csvjournal

journal = csvjournal.open(sys.argv[1], key="K", durability="normal", keep_backups=0)
done, swallowed = threading.Event(), []

def fork_children():
    for _ in range(15):
        time.sleep(0.01)
        pid = os.fork()
        if pid == 0:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
                os._exit(3)  # Ctrl-C swallowed
            except KeyboardInterrupt:
                os._exit(0)
        swallowed.append(os.waitpid(pid, 0)[1] != 0)
    done.set()

threading.Thread(target=fork_children).start()
n = 0
while not done.is_set():
    n += 1
    journal.record(f"k{n % 50}", "DONE")
journal.close()
print(json.dumps({"children": len(swallowed), "swallowed": sum(swallowed)}))
"""


def test_a_child_forked_by_another_thread_while_the_main_thread_commits_gets_its_ctrl_c(
    tmp_path: Path,
) -> None:
    # The child inherited the main thread's hold, which never ends there: every child's
    # Ctrl-C (and SIGTERM handler) was swallowed for good.
    outcome = _run(tmp_path, FORK_FROM_A_THREAD)
    assert outcome["children"] == 15
    assert outcome["swallowed"] == 0


# Ctrl-C pressed twice while record() waits for a journal another connection holds: the
# second press runs the application's handler at once, inside that commit. The handler
# records, opens a block, or closes the journal and exits.
HANDLER_INSIDE_A_BUSY_COMMIT = """\
import json, os, signal, sqlite3, sys, threading, time
import structlog, logging
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
import csvjournal

_, in_block, what = sys.argv[2].rpartition("block-")
journal = csvjournal.open(sys.argv[1], key="K", durability="normal", keep_backups=0,
                          busy_timeout=20)
journal.record("first")
outcome = {"handler": []}

def on_int(signum, frame):
    try:
        if what == "close":
            journal.close()
            outcome["closed"] = True
            print(json.dumps(outcome), flush=True)
            sys.exit(0)
        if what == "record":
            journal.record("interrupted", "STOP")
        elif what == "flush":
            journal.flush()
        else:
            with journal.batch():
                journal.record("interrupted", "STOP")
        outcome["handler"].append("recorded")
    except csvjournal.JournalBusyError as exc:
        outcome["handler"].append(str(exc))

signal.signal(signal.SIGINT, on_int)
locked = threading.Event()

def hold_the_journal():
    conn = sqlite3.connect(str(journal.journal_path), isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    locked.set()
    time.sleep(0.3)
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.8)  # over half a second after the first: the second press runs the handler
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.5)
    conn.execute("ROLLBACK")
    conn.close()

thread = threading.Thread(target=hold_the_journal, daemon=True)
thread.start()
locked.wait()
if in_block:  # the block's BEGIN waits for the journal
    with journal.batch():
        outcome["main"] = journal.record("main", "DONE")
else:
    outcome["main"] = journal.record("main", "DONE")
thread.join()
outcome["rows"] = {key: journal.get(key)["STATUS"] for key in ("first", "main")}
journal.close()
print(json.dumps(outcome))
"""


@pytest.mark.parametrize(
    "what", ["record", "batch", "flush", "close", "block-record", "block-batch"]
)
def test_a_handler_run_inside_its_threads_busy_commit_neither_hangs_nor_loses_it(
    tmp_path: Path, what: str
) -> None:
    # Its record waited for the group commit its own thread led, under it: a hang for good
    # (a block waited out the busy timeout); its close() and flush() waited for that commit
    # too. In a block whose BEGIN waited, its record went outside the block, which then
    # failed on a sequence number given twice (its nested block, on SQLAlchemy's assert).
    outcome = _run(tmp_path, HANDLER_INSIDE_A_BUSY_COMMIT, what)
    lines = (tmp_path / "j.csv").read_text().splitlines()
    if what == "close":
        assert outcome == {"handler": [], "closed": True}
        # the record under the handler did not commit: the handler exited inside it
        assert len(lines) == 2
        assert lines[1].startswith("first,PENDING,")
    else:
        (refusal,) = outcome["handler"]
        assert isinstance(refusal, str)
        assert "signal handler" in refusal
        assert outcome["rows"] == {"first": "PENDING", "main": "DONE"}
        assert [line.split(",")[0] for line in lines[1:]] == ["first", "main"]
    assert not list(tmp_path.glob("j.csv.journal-*"))


# Ctrl-C pressed six times, 0.6 s apart, while a call waits 5 s for a journal another
# connection holds. claim(), work() and close() (which gives claims back) hold signals
# around a commit that holds them again.
PRESSED_WHILE_BUSY = """\
import json, os, signal, sqlite3, sys, threading, time
import structlog, logging
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
import csvjournal

what, csv = sys.argv[2], sys.argv[1]
with open(csv, "w") as sheet:
    sheet.write("K,STATUS\\n" + "".join(f"r{n},PENDING\\n" for n in range(5)))
journal = csvjournal.open(csv, key="K", keep_backups=0)
calls = []
def on_int(signum, frame):
    calls.append(time.monotonic())

signal.signal(signal.SIGINT, on_int)
locked = threading.Event()

def hold_the_journal():
    conn = sqlite3.connect(csv + ".journal", isolation_level=None, timeout=30)
    conn.execute("BEGIN IMMEDIATE")
    locked.set()
    for _ in range(6):
        time.sleep(0.6)
        os.kill(os.getpid(), signal.SIGINT)
    time.sleep(1.4)
    conn.execute("ROLLBACK")
    conn.close()

if what == "close":
    journal.claim(2)
thread = threading.Thread(target=hold_the_journal)
thread.start()
locked.wait()
began = time.monotonic()
if what == "claim":
    journal.claim(1)
elif what == "work":
    for task in journal.work(lease=60):
        with task:
            pass
        break
elif what == "close":
    journal.close()
else:
    journal.record("x", "DONE")
thread.join()
during = [round(at - began, 2) for at in calls]
os.kill(os.getpid(), signal.SIGINT)
time.sleep(0.2)
print(json.dumps({"during": during, "after": len(calls) - len(during),
                  "put_back": signal.getsignal(signal.SIGINT) is on_int}))
journal.close()
"""


@pytest.mark.slow
@pytest.mark.parametrize("what", ["claim", "work", "close", "record"])
def test_ctrl_c_pressed_again_runs_at_once_and_its_handler_comes_back(
    tmp_path: Path, what: str
) -> None:
    # Held twice (a claim's hold around its commit's), every second press went to the
    # outer hold: four presses to get through, and then a note-taker stayed installed,
    # swallowing every later Ctrl-C.
    outcome = _run(tmp_path, PRESSED_WHILE_BUSY, what)
    during = outcome["during"]
    assert isinstance(during, list)
    assert len([at for at in during if at < 4.0]) >= 2  # at the 2nd and 4th press, not at the end
    assert outcome["after"] == 1  # a later Ctrl-C reaches the application's handler
    assert outcome["put_back"]
