from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import store
from bench.errors import ResultsFileError


def rec(i: int, status: str = "ok") -> dict:
    return {"cell_id": f"c{i}", "status": status, "name": f"n{i}"}


def test_append_and_read_back(tmp_path: Path) -> None:
    for i in range(3):
        store.append_record(tmp_path, rec(i))
    assert [r["cell_id"] for r in store.read_records(tmp_path)] == ["c0", "c1", "c2"]


def test_a_torn_last_line_is_tolerated_and_the_next_append_starts_clean(tmp_path: Path) -> None:
    store.append_record(tmp_path, rec(0))
    with open(tmp_path / store.RESULTS, "a") as fh:
        fh.write('{"cell_id": "c1", "stat')  # a writer killed mid-line
    assert [r["cell_id"] for r in store.read_records(tmp_path)] == ["c0"]
    store.append_record(tmp_path, rec(2))
    with pytest.raises(ResultsFileError, match=r"results.jsonl:2: unreadable"):
        store.read_records(tmp_path)  # the torn line is now in the middle: reported, not skipped
    lines = (tmp_path / store.RESULTS).read_text().splitlines()
    assert json.loads(lines[-1])["cell_id"] == "c2"


def test_garbage_in_the_middle_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / store.RESULTS).write_text(json.dumps(rec(0)) + "\nnot json\n" + json.dumps(rec(1)) + "\n")
    with pytest.raises(ResultsFileError, match=r"results.jsonl:2"):
        store.read_records(tmp_path)


def test_latest_by_cell_prefers_ok() -> None:
    recs = [rec(0, "error"), rec(0, "ok"), rec(0, "error"), rec(1, "timeout")]
    latest = store.latest_by_cell(recs)
    assert latest["c0"]["status"] == "ok" and latest["c1"]["status"] == "timeout"
