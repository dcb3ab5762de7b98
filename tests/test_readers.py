"""Readers of the exported CSV never see it truncated or unparsable while workers record as
fast as they can (nor while the exporter is killed: see test_readers_killed.py).

Everything runs in real processes started from small scripts written into ``tmp_path``: one
or more exporting processes (``export=True``), workers (``export=False``) recording random
existing keys, and readers that parse the CSV in a tight loop, alternately with the ``csv``
module and with ``pandas.read_csv``. Each process reports through files of its own (the
library may log on stdout, which goes to a log file with stderr). The processes and the CSV
come from _readers_procs.py and _readers.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _readers import check_csv_against_journal as _check_csv_against_journal
from _readers import integrity as _integrity
from _readers import prepare as _prepare
from _readers import temp_files as _temp_files
from _readers_procs import READY_TIMEOUT, STOP_TIMEOUT, WORKERS, Processes
from _readers_procs import check_readers as _check_readers
from _readers_procs import last_records as _last_records
from _readers_procs import start_readers as _start_readers
from _readers_procs import start_workers as _start_workers

import csvjournal

pytestmark = pytest.mark.slow

WORK_SECONDS = 20.0  # how long the workers record

# -- the tests ---------------------------------------------------------------------------


def test_readers_always_see_a_whole_csv_while_workers_record(tmp_path: Path) -> None:
    csv_path = _prepare(tmp_path)
    procs = Processes(tmp_path, csv_path)
    try:
        exporter = procs.start("exporter", "exporter-0")
        procs.wait_for_line(exporter, "leading", READY_TIMEOUT)
        readers, reader_names = _start_readers(procs)
        for reader in readers:
            procs.wait_for_line(reader, "ready", READY_TIMEOUT)
        workers, worker_names = _start_workers(procs, WORK_SECONDS)
        for worker in workers:
            procs.wait_for_line(worker, "ready", READY_TIMEOUT)
        for worker in workers:
            procs.wait_ended(worker, WORK_SECONDS + STOP_TIMEOUT)
        for reader in readers:
            procs.check_alive(reader)
        procs.check_alive(exporter)

        newest, total = _last_records(procs, worker_names)
        assert total >= WORKERS * 10, "the workers hardly recorded anything"
        with csvjournal.open(csv_path, export=False) as journal:
            journal.flush(timeout=30)  # through the exporter process
            _check_csv_against_journal(csv_path, journal, newest)

        procs.stop_file.touch()
        for proc in [*readers, exporter]:
            procs.wait_ended(proc)
        # The exporter led from start to end, and closed cleanly.
        assert procs.lines("exporter-0") == ["ready", "leading", "closed"]
        versions = _check_readers(procs, reader_names)
        assert all(n > 1 for n in versions), f"the readers saw {versions} versions of the CSV"
    finally:
        procs.cleanup()
    assert _integrity(Path(f"{csv_path}.journal")) == "ok"
    assert _temp_files(csv_path) == []
