"""The runner: one process per cell, failures recorded, the matrix goes on, resume."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench import runner, store
from bench.config import load_matrix
from tests.helpers import FULL_AND_LORA, tiny_matrix

def run(tmp_path: Path, timeout: float = 300, force: bool = False,
        methods: str = FULL_AND_LORA) -> tuple[runner.Summary, list[dict]]:
    path = tmp_path / "m.toml"
    path.write_text(tiny_matrix(methods, timeout=timeout))
    matrix = load_matrix(str(path))
    out = tmp_path / "run"
    env = {"command": "test", "started_at": "now"}
    summary = runner.run_matrix(matrix, matrix.cells, out, force, env)
    return summary, store.read_records(out)


@pytest.fixture
def fault(monkeypatch: pytest.MonkeyPatch):
    def set_fault(kind: str, cells: str = "*/full/*") -> None:
        monkeypatch.setenv("BENCH_FAULT", kind)
        monkeypatch.setenv(runner.FAULT_CELLS_ENV, cells)
    return set_fault


def test_error_is_recorded_and_the_next_cell_runs_then_rerun_resumes(tmp_path: Path, fault, monkeypatch) -> None:
    fault("error@1")
    summary, recs = run(tmp_path)
    assert [r["status"] for r in recs] == ["error", "ok"]
    assert "injected fault at step 1" in recs[0]["error"]
    assert recs[1]["time"]["step_s"] and recs[1]["quality"]["accuracy"] is not None
    mem = recs[1]["memory"]  # a fresh process: the training memory holds at least the weights
    assert mem["peak_rss_above_baseline_bytes"] > mem["breakdown"]["parameters_bytes"] > 0
    monkeypatch.delenv("BENCH_FAULT")
    summary, recs = run(tmp_path)
    assert (summary.ran, summary.skipped) == (1, 1)  # only the failed cell runs again
    assert [r["status"] for r in recs] == ["error", "ok", "ok"]
    summary, _ = run(tmp_path, force=True)
    assert summary.ran == 2


def test_out_of_memory_names_the_step(tmp_path: Path, fault) -> None:
    fault("oom@2")
    _, recs = run(tmp_path)
    assert recs[0]["status"] == "oom" and recs[0]["failed_step"] == 2
    assert "step 2" in recs[0]["error"]
    assert recs[1]["status"] == "ok"


def test_a_crashing_worker_is_an_error(tmp_path: Path, fault) -> None:
    fault("exit@0")
    _, recs = run(tmp_path)
    assert recs[0]["status"] == "error" and "exited with code 3" in recs[0]["error"]
    assert recs[1]["status"] == "ok"


def test_a_hanging_cell_times_out_and_leaves_no_process(tmp_path: Path, fault) -> None:
    fault("hang@0")
    hanging_first = FULL_AND_LORA.replace('method = "full"', 'method = "full"\nsettings = { timeout_s = 15 }')
    _, recs = run(tmp_path, methods=hanging_first)
    assert recs[0]["status"] == "timeout" and "timeout_s = 15" in recs[0]["error"]
    with pytest.raises(ProcessLookupError):
        os.killpg(recs[0]["worker_pid"], 0)
    assert recs[1]["status"] == "ok"


def test_unwritable_output_is_refused_before_any_cell(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("not a directory")
    matrix = load_matrix("smoke")
    with pytest.raises(Exception, match="not writable"):
        runner.run_matrix(matrix, matrix.cells, target / "run", False, {"command": "x", "started_at": "now"})
