"""The results store (bench/results/store.py): appended records read back as Records, a torn last
line tolerated and a bad line elsewhere named by file and line, the latest record of each cell."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.errors import ResultsFileError
from bench.results import store
from bench.results.record import Record


def rec(i: int, status: str = "ok") -> Record:
    return Record(cell_id=f"c{i}", status=status, name=f"n{i}")


def test_append_and_read_back(tmp_path: Path) -> None:
    for i in range(3):
        store.append_record(tmp_path, rec(i))
    back = store.read_records(tmp_path)
    assert [r.cell_id for r in back] == ["c0", "c1", "c2"]
    assert [r.to_json() for r in back] == [rec(i).to_json() for i in range(3)]
    assert store.read_records(tmp_path / store.RESULTS) == back  # a folder or its file


def test_a_torn_last_line_is_tolerated_and_the_next_append_starts_clean(tmp_path: Path) -> None:
    store.append_record(tmp_path, rec(0))
    with open(tmp_path / store.RESULTS, "a") as fh:
        fh.write('{"cell_id": "c1", "stat')  # a writer killed mid-line
    results = store.read_results(tmp_path)
    assert [r.cell_id for r in results.records] == ["c0"] and results.torn_tail
    with pytest.raises(ResultsFileError, match=r"results.jsonl:2: unreadable"):
        store.read_results(tmp_path, strict=True)
    store.append_record(tmp_path, rec(2))
    with pytest.raises(ResultsFileError, match=r"results.jsonl:2: unreadable"):
        store.read_records(tmp_path)  # the torn line is now in the middle: reported, not skipped
    lines = (tmp_path / store.RESULTS).read_text().splitlines()
    assert json.loads(lines[-1])["cell_id"] == "c2"


def test_garbage_in_the_middle_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / store.RESULTS).write_text(json.dumps(rec(0).to_json()) + "\nnot json\n"
                                          + json.dumps(rec(1).to_json()) + "\n")
    with pytest.raises(ResultsFileError, match=r"results.jsonl:2"):
        store.read_records(tmp_path)


def test_a_line_that_is_not_a_record_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / store.RESULTS).write_text('{"cell_id": "c0"}\n' + json.dumps(rec(1).to_json()) + "\n")
    with pytest.raises(ResultsFileError, match=r"results.jsonl:1: .*needs 'cell_id' and 'status'"):
        store.read_records(tmp_path)
    with pytest.raises(ResultsFileError, match="no results file"):
        store.read_records(tmp_path / "elsewhere")


def test_latest_by_cell_prefers_ok() -> None:
    recs = [rec(0, "error"), rec(0, "ok"), rec(0, "error"), rec(1, "timeout")]
    latest = store.latest_by_cell(recs)
    assert latest["c0"].status == "ok" and latest["c1"].status == "timeout"
    assert latest["c0"] is recs[1]


def test_env_json_round_trip(tmp_path: Path) -> None:
    assert store.read_env(tmp_path) == {}
    store.write_env(tmp_path, {"command": "bench run", "path": tmp_path})
    assert store.read_env(tmp_path) == {"command": "bench run", "path": str(tmp_path)}
    (tmp_path / store.ENV).write_text("{")
    with pytest.raises(ResultsFileError, match="env.json: not valid JSON"):
        store.read_env(tmp_path)
