"""The runner: one process per cell, failures recorded, the matrix goes on, resume. Faults come in
through the launcher's target (tests/exec/faults.py): real processes that fail, exit, hang or
train and fail in a step; the cells they do not pick run as the worker runs them."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.config import load_matrix
from bench.errors import BenchError
from bench.exec import runner
from bench.exec.launchers import CellLauncher
from bench.exec.worker import base_record
from bench.results import store
from bench.results.record import Record
from bench.scenarios import forgetting
from tests.exec.faults import CHILD_SUFFIX, EXIT_CODE, Fault, alive, live_processes_in_group
from tests.helpers import FULL_AND_LORA, tiny_matrix

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def run(tmp_path: Path, launcher: runner.Launcher | None = None, timeout: float = 300, force: bool = False,
        methods: str = FULL_AND_LORA) -> tuple[runner.Summary, list[Record]]:
    path = tmp_path / "m.toml"
    path.write_text(tiny_matrix(methods, timeout=timeout))
    matrix = load_matrix(str(path))
    out = tmp_path / "run"
    env = {"command": "test", "started_at": "now"}
    summary = runner.run_matrix(matrix, matrix.cells, out, force, env, launcher=launcher)
    return summary, store.read_records(out)


def test_error_is_recorded_and_the_next_cell_runs_then_rerun_resumes(tmp_path: Path) -> None:
    summary, recs = run(tmp_path, CellLauncher(target=Fault("error", step=1)))
    assert [r.status for r in recs] == ["error", "ok"]
    assert summary.by_status == {"error": 1, "ok": 1}
    assert recs[0].error == "RuntimeError at training step 1: injected fault at step 1"
    assert (recs[0].failed_phase, recs[0].failed_step) == ("training", 1)
    assert recs[1].time.step_s and recs[1].quality.accuracy is not None
    mem = recs[1].memory  # a fresh process: the training memory holds at least the weights
    assert mem.peak_rss_above_baseline_bytes > mem.breakdown.parameters_bytes > 0
    assert all(r.duration_s > 0 and (r.slot.index, r.slot.of) == (0, 1) for r in recs)
    for r in recs:  # both were set up (the failure came in training): the parts add up to the whole
        parts = r.time.setup_parts_s
        assert set(parts) == {"spawn", "imports_and_plan", "load", "adapt"} and all(v > 0 for v in parts.values())
        assert r.time.setup_s == pytest.approx(sum(parts.values())) and r.time.setup_s < r.duration_s
    summary, recs = run(tmp_path)  # the default launcher: no fault
    assert (summary.ran, summary.skipped) == (1, 1)  # only the failed cell runs again
    assert [r.status for r in recs] == ["error", "ok", "ok"]
    assert recs[2].cell_id == recs[0].cell_id
    env = store.read_env(tmp_path / "run")
    assert [i["command"] for i in env["invocations"]] == ["test", "test"]  # every invocation is kept
    text = env["general_text"]["source"]  # chosen by the runner, used by every cell's process
    assert text and all(r.quality.general_text == text for r in recs) and env["invocations"][-1]["general_text"] == text
    summary, _ = run(tmp_path, force=True)
    assert summary.ran == 2


def test_out_of_memory_names_the_step(tmp_path: Path) -> None:
    _, recs = run(tmp_path, CellLauncher(target=Fault("oom", step=2)))
    assert (recs[0].status, recs[0].failed_phase, recs[0].failed_step) == ("oom", "training", 2)
    assert recs[0].error == "out of memory at training step 2: injected out-of-memory at step 2"
    assert recs[1].status == "ok"


def test_a_crashing_worker_is_an_error(tmp_path: Path) -> None:
    _, recs = run(tmp_path, CellLauncher(target=Fault("exit")))
    assert recs[0].status == "error" and f"exited with code {EXIT_CODE}" in recs[0].error
    assert "exiting before any record" in recs[0].error  # the log's tail
    assert recs[0].worker_pid is not None
    assert recs[1].status == "ok"


def test_a_hanging_cell_times_out_and_leaves_no_process(tmp_path: Path) -> None:
    hanging_first = FULL_AND_LORA.replace('method = "full"', 'method = "full"\nsettings = { timeout_s = 10 }')
    _, recs = run(tmp_path, CellLauncher(target=Fault("hang")), methods=hanging_first)
    assert recs[0].status == "timeout" and "timeout_s = 10" in recs[0].error
    assert live_processes_in_group(recs[0].worker_pid) == []  # the cell and what it started
    child = int(Path(f"{tmp_path}/run/logs/{recs[0].cell_id}.log{CHILD_SUFFIX}").read_text())
    assert not alive(child)
    assert recs[1].status == "ok"


def test_unwritable_output_is_refused_before_any_cell(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("not a directory")
    matrix = load_matrix("smoke")
    with pytest.raises(BenchError, match="output directory .* is not writable"):
        runner.run_matrix(matrix, matrix.cells, target / "run", False, {"command": "x", "started_at": "now"})


def test_concurrent_slots_append_every_record(tmp_path: Path) -> None:
    (tmp_path / "m.toml").write_text(tiny_matrix('[[methods]]\nmethod = "lora"\noptions = { r = 2 }\n').replace(
        'seq_len = 32', 'seq_len = 32\n[[settings]]\nbatch_size = 1\n[[settings]]\nbatch_size = 2\n'
                        '[[settings]]\nbatch_size = 3'))
    matrix = load_matrix(str(tmp_path / "m.toml"))

    class Echo:
        def run(self, cell, run_dir, name, slot_env) -> Record:  # a launcher that runs nothing
            rec = base_record(cell, name)
            rec.status = "ok"
            rec.extra["seen_env"] = slot_env
            return rec

    slots = [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    summary = runner.run_matrix(matrix, matrix.cells, tmp_path / "run", False, {"command": "t", "started_at": "n"},
                                slots=slots, launcher=Echo())
    recs = store.read_records(tmp_path / "run")
    assert summary.ran == 3 and summary.by_status == {"ok": 3}
    assert sorted(r.cell_id for r in recs) == sorted(c.cell_id for c in matrix.cells)
    seen = [dict(r.extra["seen_env"]) for r in recs]
    choices = [json.loads(s.pop(forgetting.CHOICE_ENV)) for s in seen]  # the run's text, whatever the slot
    assert all(s in slots and r.slot.of == 2 for s, r in zip(seen, recs))
    assert all(r.slot.env == slots[r.slot.index] for r in recs)  # the slot a cell ran in is the env it saw
    env = store.read_env(tmp_path / "run")
    assert env["slots"] == slots and all(c == env["general_text"] for c in choices)


def test_every_record_says_what_produced_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stamped by the runner from env.json (collected once): a record read alone can be attributed."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(forgetting.TEXT_ENV, raising=False)
    (tmp_path / "m.toml").write_text(tiny_matrix())
    matrix = load_matrix(str(tmp_path / "m.toml"))
    env = {"command": "t", "started_at": "2024-05-01T00:00:00+00:00", "python": "3.11.9", "platform": "Linux-x",
           "packages": {"torch": "2.4.0", "peft": None}, "git": {"commit": "abc123", "dirty": True}}

    class Bare:
        def run(self, cell, run_dir, name, slot_env) -> Record:
            rec = base_record(cell, name)
            rec.status = "timeout"  # a record the cell never wrote is attributed too
            return rec

    runner.run_matrix(matrix, matrix.cells, tmp_path / "run", False, env, launcher=Bare())
    recs = store.read_records(tmp_path / "run")
    assert len(recs) == 2 and all(r.provenance.to_json() == {
        "packages": {"torch": "2.4.0", "peft": None}, "python": "3.11.9", "platform": "Linux-x", "git_commit": "abc123",
        "git_dirty": True, "git_commit_from": None, "run_started_at": "2024-05-01T00:00:00+00:00"} for r in recs)
    assert store.read_env(tmp_path / "run")["general_text"]["fallback_reason"].startswith("wikitext-2 not used")


def _set(value: Any) -> Any:
    """A record's JSON without its nulls: what it says."""
    if isinstance(value, dict):
        return {k: _set(v) for k, v in value.items() if v is not None}
    return value


def test_records_from_before_provenance_read_as_they_were() -> None:
    line = json.loads((FIXTURES / "cpu_run" / "results.jsonl").read_text().splitlines()[0])
    old = {k: v for k, v in line.items() if k != "provenance"}  # as a version before it wrote it
    old["device"] = {"kind": line["device"]["kind"], "name": line["device"]["name"]}
    rec = Record.from_json(old)
    assert rec.ok and rec.provenance.empty and rec.device.driver is None and rec.device.kind == old["device"]["kind"]
    out = rec.to_json()
    assert out["provenance"] is None and _set(out) == _set(old)  # written back as it came


def test_plan_lines_name_every_cell_and_its_settings() -> None:
    matrix = load_matrix("smoke")
    lines = runner.plan_lines(matrix, matrix.cells)
    assert lines[0].startswith(f"matrix smoke ({matrix.path}): {len(matrix.cells)} cell(s)")
    for c, line in zip(matrix.cells, lines[1:]):
        assert c.cell_id in line and c.name in line and f"method={c.method.method}" in line
