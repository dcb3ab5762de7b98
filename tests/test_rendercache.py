"""The exporter's rendering after a crash: started from the CSV on disk when that is the
last complete export, else from the journal; the file written is the same either way."""

from __future__ import annotations

import codecs
import json
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path

import pytest
from structlog.testing import capture_logs

import csvjournal
from csvjournal._rendercache import RenderedCsv
from csvjournal.csvio import render_csv

# Records made by a worker that then dies with SIGKILL: the CSV is left behind them.
_CRASHING_WORKER = textwrap.dedent(
    """
    import json, os, signal, sys, csvjournal
    journal = csvjournal.open(sys.argv[1], export=False)
    for key, status, fields in json.loads(sys.argv[2]):
        journal.record(key, status, fields=fields)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _crash_after(csv_path: Path, records: list[tuple[str, str | None, dict[str, str]]]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CRASHING_WORKER, str(csv_path), json.dumps(records)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == -9, done.stderr


def _write_csv(
    path: Path, rows: list[list[str]], sep: str, end: str, *, bom: bool, final: bool
) -> None:
    def cell(value: str) -> str:
        if any(ch in value for ch in (sep, '"', "\n", "\r")):
            return '"' + value.replace('"', '""') + '"'
        return value

    text = end.join(sep.join(cell(v) for v in row) for row in rows) + (end if final else "")
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode())


def _reopen_and_export(csv_path: Path, tmp_path: Path, **options: object) -> list[bool]:
    """Open the journal as the exporter; return what seeding decided, and check the CSV
    against a rendering made from the journal alone."""
    with capture_logs() as logs, csvjournal.open(csv_path, **options) as journal:  # type: ignore[arg-type]
        journal.export(tmp_path / "from-journal.csv")
        assert csv_path.read_bytes() == (tmp_path / "from-journal.csv").read_bytes()
    return [e["seeded"] for e in logs if e["event"] == "csv_rendering_seeded"]


@pytest.mark.slow
@pytest.mark.parametrize("sep", [",", ";", "\t", "|"])
@pytest.mark.parametrize(("end", "bom", "final"), [("\n", False, True), ("\r\n", True, False)])
def test_a_crashed_jobs_csv_seeds_the_next_export(
    tmp_path: Path, sep: str, end: str, bom: bool, final: bool
) -> None:
    csv_path = tmp_path / "orders.csv"
    header = ["ID", "NOTE", "STATUS", "LAST_PROCESSED"]
    rows = [header] + [[f"k{i}", f"note {i}, é", "PENDING", ""] for i in range(50)]
    _write_csv(csv_path, rows, sep, end, bom=bom, final=final)
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("k1", "COMPLETED")
    before = csv_path.read_bytes()
    _crash_after(
        csv_path,
        [("k2", "COMPLETED", {}), ("k7", "FAILED", {"NOTE": 'a "quoted" note'})]
        + [(f"new{i}", None, {"NOTE": "added"}) for i in range(3)],
    )
    assert csv_path.read_bytes() == before  # the crash left the CSV behind the journal
    assert _reopen_and_export(csv_path, tmp_path) == [True]
    with csvjournal.open(csv_path) as journal:
        assert journal.get("k7")["NOTE"] == 'a "quoted" note'  # type: ignore[index]
        assert journal.get("new2")["STATUS"] == "PENDING"  # type: ignore[index]
    text = csv_path.read_bytes().decode("utf-8-sig")
    assert text.endswith(end) == final
    assert text.count(end) == 54 - (not final)  # header, 50 rows, 3 new


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "options", "seeded"),
    [
        pytest.param({"NEW COLUMN": "x"}, {}, [False], id="a-column-added-since"),
        pytest.param({}, {"formula_guard": True}, [], id="formula-guard-changed"),
    ],
)
def test_a_csv_that_cannot_seed_is_rendered_from_the_journal(
    tmp_path: Path, change: dict[str, str], options: dict[str, object], seeded: list[bool]
) -> None:
    csv_path = tmp_path / "orders.csv"
    rows = [["ID", "NOTE", "STATUS", "LAST_PROCESSED"]]
    rows += [[f"k{i}", f"=note {i}", "PENDING", ""] for i in range(20)]
    _write_csv(csv_path, rows, ",", "\n", bom=False, final=True)
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("k1", "COMPLETED")
    _crash_after(csv_path, [("k3", "FAILED", change), ("k4", "COMPLETED", {})])
    assert _reopen_and_export(csv_path, tmp_path, **options) == seeded
    with csvjournal.open(csv_path) as journal:
        assert journal.get("k4")["STATUS"] == "COMPLETED"  # type: ignore[index]


@pytest.mark.slow
def test_a_line_break_in_a_cell_declines_the_seed_but_not_the_export(tmp_path: Path) -> None:
    csv_path = tmp_path / "orders.csv"
    rows = [["ID", "STATUS", "LAST_PROCESSED"], ["a", "PENDING", ""]]
    _write_csv(csv_path, rows, ",", "\n", bom=False, final=True)
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("a", NOTE="one\ntwo")
        journal.record("b", NOTE="three")
    _crash_after(csv_path, [("b", "COMPLETED", {})])
    assert _reopen_and_export(csv_path, tmp_path) == [False]


def _crashed_thirty_rows(
    tmp_path: Path, records: list[tuple[str, str | None, dict[str, str]]]
) -> Path:
    """A 30-row journal exported once, then ``records`` made by a worker killed with -9."""
    csv_path = tmp_path / "orders.csv"
    rows = [["ID", "STATUS", "LAST_PROCESSED"]] + [[f"k{i}", "PENDING", ""] for i in range(30)]
    _write_csv(csv_path, rows, ",", "\n", bom=False, final=True)
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.record("k1", "COMPLETED")
    _crash_after(csv_path, records)
    return csv_path


@pytest.mark.slow
def test_an_export_whose_bookkeeping_was_lost_still_seeds(tmp_path: Path) -> None:
    csv_path = _crashed_thirty_rows(tmp_path, [("k2", "COMPLETED", {})])
    # What a power cut right after the rename leaves: the unsynced bookkeeping is gone,
    # the CSV is known only as the export that was about to be put in place.
    with closing(sqlite3.connect(f"{csv_path}.journal")) as conn, conn:
        conn.execute("DELETE FROM settings WHERE name IN ('csv_digest', 'csv_seq')")
    assert _reopen_and_export(csv_path, tmp_path) == [True]
    with csvjournal.open(csv_path) as journal:
        assert journal.get("k2")["STATUS"] == "COMPLETED"  # type: ignore[index]


@pytest.mark.slow
def test_the_export_before_one_that_died_unrenamed_still_seeds(tmp_path: Path) -> None:
    csv_path = _crashed_thirty_rows(tmp_path, [("k2", "COMPLETED", {}), ("k3", "FAILED", {})])
    # What an exporter killed between its synced note and the rename leaves: the note
    # names a file that never appeared; the CSV on disk is the export before it.
    with closing(sqlite3.connect(f"{csv_path}.journal")) as conn, conn:
        (newest,) = conn.execute("SELECT max(seq) FROM events").fetchone()
        for name, value in [
            ("csv_pending", '"1:00000000"'),
            ("csv_pending_seq", str(newest)),
            ("csv_pending_rows", "30"),
        ]:
            conn.execute("UPDATE settings SET value = ? WHERE name = ?", (value, name))
    assert _reopen_and_export(csv_path, tmp_path) == [True]
    with csvjournal.open(csv_path) as journal:
        assert journal.get("k3")["STATUS"] == "FAILED"  # type: ignore[index]


def _stored(journal_path: Path) -> dict[str, str | None]:
    with closing(sqlite3.connect(journal_path)) as conn:
        return dict(conn.execute("SELECT key, line FROM rows ORDER BY pos"))


def _rendering(journal: csvjournal.Journal) -> RenderedCsv:
    rendered = RenderedCsv(journal._settings.dialect, formula_guard=False)
    with journal._store.read() as conn:
        rendered.refresh(conn)
    return rendered


def _save(journal: csvjournal.Journal, rendered: RenderedCsv, limit: int | None) -> None:
    with journal._store.write() as conn:
        rendered.save_lines(conn, limit=limit)


def test_records_are_saved_a_chunk_at_a_time_in_the_order_rendered(tmp_path: Path) -> None:
    with csvjournal.open(tmp_path / "orders.csv", key="ID", export=False) as journal:
        with journal.batch():
            for i in range(10):
                journal.record(f"k{i}", NOTE=f"n{i}")
        rendered = _rendering(journal)
        assert len(rendered.unsaved) == 10
        _save(journal, rendered, limit=4)
        stored = _stored(journal.journal_path)
        assert [key for key, line in stored.items() if line is not None] == ["k0", "k1", "k2", "k3"]
        assert stored["k2"] == f"k2,PENDING,{journal.get('k2')['LAST_PROCESSED']},n2\n"  # type: ignore[index]
        journal.record("k5", "DONE")  # changed since rendered: its record is not stored
        _save(journal, rendered, limit=None)
        assert not rendered.unsaved
        stored = _stored(journal.journal_path)
        assert stored["k5"] is None
        assert all(line is not None for key, line in stored.items() if key != "k5")


def _stored_columns(journal_path: Path) -> dict[str, int | None]:
    with closing(sqlite3.connect(journal_path)) as conn:
        return dict(conn.execute("SELECT key, line_columns FROM rows ORDER BY pos"))


def _from_scratch(journal: csvjournal.Journal) -> bytes:
    """The CSV as rendered from every row's cells, no stored record used."""
    frame = journal.to_dataframe()
    return render_csv(list(frame.columns), frame.values.tolist(), journal._settings.dialect)


def test_a_new_column_voids_no_stored_record(tmp_path: Path) -> None:
    csv_path = tmp_path / "orders.csv"
    with csvjournal.open(csv_path, key="ID") as journal:
        for i in range(5):
            journal.record(f"k{i}", "DONE")
    before = _stored(Path(f"{csv_path}.journal"))
    assert all(line is not None for line in before.values())
    with csvjournal.open(csv_path, export=False) as journal:
        journal.record("k1", NOTE="new column")  # every record gains a cell
        rendered = _rendering(journal)
        assert not rendered.format_changed
        _save(journal, rendered, limit=None)  # only k1's record, the one that changed
        stored = _stored(journal.journal_path)
        assert stored["k1"] == f"k1,DONE,{journal.get('k1')['LAST_PROCESSED']},new column\n"  # type: ignore[index]
        assert {k: v for k, v in stored.items() if k != "k1"} == {
            k: v for k, v in before.items() if k != "k1"
        }  # three columns still, completed when read
        assert _stored_columns(journal.journal_path) == {
            "k0": 3,
            "k1": 4,
            "k2": 3,
            "k3": 3,
            "k4": 3,
        }
        expected = _from_scratch(journal)
    with csvjournal.open(csv_path) as journal:  # a fresh exporter completes them
        journal.export(tmp_path / "fresh.csv")  # and so does a streamed export
    assert csv_path.read_bytes() == expected
    assert (tmp_path / "fresh.csv").read_bytes() == expected
    assert b"k0,DONE," in expected
    assert expected.count(b"\n") == 6


@pytest.mark.parametrize(("sep", "end"), [(",", "\n"), (";", "\r\n"), ("\t", "\r")])
def test_a_running_exporter_completes_its_records_for_new_columns(
    tmp_path: Path, sep: str, end: str
) -> None:
    csv_path = tmp_path / "orders.csv"
    rows = [["ID", "NOTE", "STATUS"]] + [
        [f"k{i}", f'n{i}, "q"{end}x', "PENDING"] for i in range(600)
    ]
    _write_csv(csv_path, rows, sep, end, bom=False, final=True)
    with csvjournal.open(csv_path, key="ID") as journal:
        journal.flush()
        for round_ in range(3):  # new columns, one record or several at a time
            journal.record(f"k{round_}", fields={f"NEW {round_}": "v", f"MORE {round_}": ""})
            journal.flush()
            assert csv_path.read_bytes() == _from_scratch(journal)
        voided = [key for key, line in _stored(journal.journal_path).items() if line is None]
        assert len(voided) <= 3  # the rows recorded, until the exporter stores them again
        journal.record("k599", "DONE", fields={"LAST": "x"})
        journal.flush()
        assert csv_path.read_bytes() == _from_scratch(journal)
    with csvjournal.open(csv_path) as journal:
        journal.export(tmp_path / "fresh.csv")
        expected = _from_scratch(journal)
    assert csv_path.read_bytes() == expected == (tmp_path / "fresh.csv").read_bytes()


def test_records_stored_with_the_other_formula_guard_are_all_rendered_again(
    tmp_path: Path,
) -> None:
    csv_path = tmp_path / "orders.csv"
    with csvjournal.open(csv_path, key="ID") as journal:
        for i in range(5):
            journal.record(f"k{i}", "DONE", NOTE=f"=n{i}")
    with csvjournal.open(csv_path, formula_guard=True) as journal:
        journal.record("k1", EXTRA="x")
        journal.flush()
        assert b"'=n3" in csv_path.read_bytes()
        expected = render_csv(
            list(journal.to_dataframe().columns),
            journal.to_dataframe().values.tolist(),
            journal._settings.dialect,
            formula_guard=True,
        )
    assert csv_path.read_bytes() == expected
    stored = _stored(Path(f"{csv_path}.journal"))
    assert all(f"'=n{i}" in stored[f"k{i}"] for i in range(5))  # type: ignore[operator]
    # rendered anew at the guarded open (4 columns), k1 again after its new column
    assert _stored_columns(Path(f"{csv_path}.journal")) == {
        f"k{i}": 5 if i == 1 else 4 for i in range(5)
    }


def test_an_imported_csv_is_stored_record_by_record_at_open(tmp_path: Path) -> None:
    csv_path = tmp_path / "orders.csv"
    rows = [["ID", "STATUS", "NOTE"]] + [[f"k{i:04d}", "PENDING", f"n, {i}"] for i in range(5000)]
    _write_csv(csv_path, rows, ",", "\n", bom=False, final=True)
    with csvjournal.open(csv_path, key="ID") as journal:
        # stored by the exporting open itself, not 256 at a time by its thread afterwards
        stored = _stored(journal.journal_path)
        assert len(stored) == 5000
        assert stored["k0007"] == 'k0007,PENDING,"n, 7",\n'  # LAST_PROCESSED added, empty
        assert all(line is not None for line in stored.values())


def test_a_streamed_export_completes_stretches_of_every_shape(tmp_path: Path) -> None:
    # 4,096 rows a stretch: one all of one narrower count, one mixed, one with a record to
    # render, across several new columns, in a dialect with a two-character terminator.
    csv_path = tmp_path / "orders.csv"
    rows = [["ID", "NOTE", "STATUS"]] + [[f"k{i:05d}", f"n; {i}", "PENDING"] for i in range(9000)]
    _write_csv(csv_path, rows, ";", "\r\n", bom=True, final=False)
    with csvjournal.open(csv_path, key="ID") as journal:
        for key, field in (("k00005", "A"), ("k08000", "B"), ("k08001", "C")):
            journal.record(key, fields={field: f"{field}\r\nx"})
            journal.flush()
    with csvjournal.open(csv_path, export=False) as journal:
        stored = _stored_columns(journal.journal_path)
        assert sum(count is not None for count in stored.values()) == 9000
        assert {4, 5, 7} <= set(stored.values())  # the rows after the first new column: 4
        journal.record("k04100", D="not stored: rendered")
        journal.export(tmp_path / "copy.csv")
        expected = _from_scratch(journal)
    assert (tmp_path / "copy.csv").read_bytes() == expected
    assert expected.startswith(codecs.BOM_UTF8)


def test_an_exporter_that_lost_its_role_stores_nothing_over_anothers_new_format(
    tmp_path: Path,
) -> None:
    # The renderings of two exporters driven by hand: the first (no formula guard, four
    # columns) still holds records to store when the second (guarded, a fifth column) has
    # voided every stored record and written its format. A late save must not mix them.
    csv_path = tmp_path / "s.csv"
    csv_path.write_text("ID,A\nk1,=1\nk2,x\n")
    csvjournal.open(csv_path, key="ID").close()
    with csvjournal.open(csv_path, key="ID", export=False) as journal:
        journal.record("k1", A="=2")
        journal.record("k2", A="y")
        old = RenderedCsv(journal._settings.dialect, formula_guard=False)
        with journal._store.read() as conn:
            old.refresh(conn)
        journal.record("k3", NEW="n")
        new = RenderedCsv(journal._settings.dialect, formula_guard=True)
        with journal._store.read() as conn:
            new.refresh(conn)
        _save(journal, new, limit=None)
        before = _stored(journal.journal_path)
        _save(journal, old, limit=None)
        assert _stored(journal.journal_path) == before
        assert not old.unsaved
    with csvjournal.open(csv_path, export=False, formula_guard=True) as journal:
        journal.export(tmp_path / "out.csv")
        frame = journal.to_dataframe()
        dialect = journal._settings.dialect
        expected = render_csv(
            list(frame.columns), frame.values.tolist(), dialect, formula_guard=True
        )
    assert (tmp_path / "out.csv").read_bytes() == expected
    assert b"k1,'=2,PENDING," in expected


def test_a_csv_written_with_the_other_formula_guard_is_not_taken_as_current(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    csv_path = tmp_path / "s.csv"
    csv_path.write_text("ID,A\nk1,=1+1\nk2,-x\n")
    csvjournal.open(csv_path, key="ID").close()  # records stored, unguarded
    # A guarded open exports, then dies before it stores its records (lines_format stays
    # unguarded): a kill -9 between the two, simulated by storing nothing.
    monkeypatch.setattr(RenderedCsv, "save_lines", lambda self, conn, limit=None: None)
    csvjournal.open(csv_path, formula_guard=True).close()
    assert b"'=1+1" in csv_path.read_bytes()
    monkeypatch.undo()
    with csvjournal.open(csv_path, formula_guard=False) as journal:
        journal.flush()
        frame = journal.to_dataframe()
        expected = render_csv(list(frame.columns), frame.values.tolist(), journal._settings.dialect)
    assert csv_path.read_bytes() == expected
    assert b"k1,=1+1," in expected


def test_records_stored_under_an_older_csvjournals_guard_rules_are_rendered_anew(
    tmp_path: Path,
) -> None:
    # Before rules 2, the guard prefixed numbers with a decimal comma: "'-12,5".
    csv_path = tmp_path / "amounts.csv"
    csv_path.write_text("ID;AMOUNT\nk1;-12,5\nk2;=1+1\n")  # a European sheet
    csvjournal.open(csv_path, key="ID", formula_guard=True).close()
    journal_path = Path(f"{csv_path}.journal")
    with closing(sqlite3.connect(journal_path)) as conn, conn:  # as an older one stored them
        query = "SELECT value FROM settings WHERE name = 'lines_format'"
        older = json.loads(conn.execute(query).fetchone()[0])
        older.pop("guard_rules", None)
        conn.execute(
            "UPDATE settings SET value = ? WHERE name = 'lines_format'", (json.dumps(older),)
        )
        conn.execute("UPDATE rows SET line = replace(line, ';-12,5', ';''-12,5') WHERE key = 'k1'")
        assert conn.total_changes == 2
    with csvjournal.open(csv_path) as journal:
        journal.record("k2", "DONE")
        journal.flush()
        assert csv_path.read_bytes() == _from_scratch_guarded(journal)
    assert b"k1;-12,5;" in csv_path.read_bytes()
    assert b"'=1+1" in csv_path.read_bytes()


def _from_scratch_guarded(journal: csvjournal.Journal) -> bytes:
    frame = journal.to_dataframe()
    return render_csv(
        list(frame.columns), frame.values.tolist(), journal._settings.dialect, formula_guard=True
    )
