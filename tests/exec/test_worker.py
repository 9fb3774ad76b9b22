"""The worker: a failing cell says where it failed (phase, training step), keeps its last frames in
the record and prints the whole traceback to its log (the cell process's stderr). Failures are
injected in this process by monkeypatching what the worker calls; tests/exec/faults.py does the
same inside a spawned cell process for the runner's tests."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.exec import worker
from bench.exec.worker import Phase, run_cell
from bench.results.record import Record
from tests.helpers import cell


def _fail_on_call(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, call: int, exc: Exception) -> None:
    real = getattr(owner, name)
    calls = {"n": 0}

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == call:
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, failing)


def test_an_error_in_a_training_step_names_the_step(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    _fail_on_call(monkeypatch, torch.optim.AdamW, "step", 3, RuntimeError("boom in the optimizer"))
    rec = run_cell(cell("full", steps=3, warmup_steps=1, eval_examples=0))
    assert rec.status == "error"
    assert (rec.failed_phase, rec.failed_step) == ("training", 2)  # the third step, 0-based
    assert rec.error == "RuntimeError at training step 2: boom in the optimizer"
    assert "boom in the optimizer" in rec.traceback
    log = capsys.readouterr().err
    assert "cell failed at training step 2" in log and "Traceback (most recent call last)" in log
    assert "bench/exec/worker.py" in log  # the whole traceback, from the worker's frames down
    # what was measured before the failure stays in the record
    assert rec.device.kind == "cpu" and rec.params.trainable == rec.params.total > 0
    assert rec.finished_at is not None


def test_an_out_of_memory_step_is_an_oom_record(monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_on_call(monkeypatch, torch.optim.AdamW, "step", 2, torch.OutOfMemoryError("no room"))
    rec = run_cell(cell("lora", options={"r": 2}, steps=3, warmup_steps=1, eval_examples=0))
    assert (rec.status, rec.failed_phase, rec.failed_step) == ("oom", "training", 1)
    assert rec.error == "out of memory at training step 1: no room"
    # an out-of-memory record says what the cell would have needed
    assert rec.memory.predicted.peak_bytes is not None and rec.memory.predicted.peak_bytes > 0


def _owner(phase: str) -> Any:
    import bench.catalog.models
    import bench.scenarios.training
    import methods.lora

    return {"load": bench.catalog.models, "adapt": methods.lora.Lora,
            "evaluation before": bench.scenarios.training}[phase]


@pytest.mark.parametrize("phase, name", [("load", "load_model"), ("adapt", "adapt"), ("evaluation before", "evaluate")])
def test_failures_outside_training_name_their_phase(phase: str, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_on_call(monkeypatch, _owner(phase), name, 1, ValueError(f"broken {phase}"))
    rec = run_cell(cell("lora", options={"r": 2}, steps=1, warmup_steps=0, eval_examples=4))
    assert (rec.status, rec.failed_phase, rec.failed_step) == ("error", phase, None)
    assert rec.error == f"ValueError in phase '{phase}': broken {phase}"


def test_an_unsupported_cell_is_a_result_not_a_failure() -> None:
    rec = run_cell(cell("icl", "tiny-bert"))
    assert rec.status == "unsupported" and "causal LM" in rec.error
    assert rec.failed_phase is None and rec.traceback is None


def test_an_ok_record_has_no_failure_fields() -> None:
    rec = run_cell(cell("lora", options={"r": 2}, steps=1, warmup_steps=0, eval_examples=0))
    assert rec.ok and rec.error is None
    assert rec.failed_phase is None and rec.failed_step is None and rec.traceback is None
    # it is every field of the cell's identity, and the record survives its JSON form
    c = cell("lora", options={"r": 2}, steps=1, warmup_steps=0, eval_examples=0)
    assert (rec.cell_id, rec.name, rec.variant, rec.method) == (c.cell_id, c.name, "lora", "lora")
    assert Record.from_json(json.loads(json.dumps(rec.to_json()))).to_json() == rec.to_json()


def test_phase_names_the_step_only_in_training() -> None:
    from bench.loop import LoopState

    phase = Phase()
    assert phase.where() == "in phase 'plan'"
    phase.loop = LoopState(step=4)
    assert phase.step is None  # a loop state alone does not make the phase training
    phase.at("training")
    assert (phase.step, phase.where()) == (4, "at training step 4")
    phase.at("count")
    assert (phase.step, phase.where()) == (None, "in phase 'count'")


def test_write_json_is_whole_or_absent(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    worker.write_json(str(out), {"status": "ok", "path": tmp_path})  # default=str for odd values
    assert json.loads(out.read_text()) == {"status": "ok", "path": str(tmp_path)}
    assert not (tmp_path / "result.json.tmp").exists()


@pytest.mark.parametrize("kind, driver", [("cuda", "550.54.15"), ("cpu", None)])
def test_a_cuda_cell_reads_its_own_driver(kind: str, driver: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cell's process is on the cell's machine (a cluster node is not the runner's): it names
    the driver, failed or not; a CPU cell has none."""
    from bench.exec import environment

    def execute(cell: Any, rec: Record, phase: Phase) -> None:
        rec.device.set(kind=kind, name="a device")
        raise RuntimeError("after the device was picked")

    monkeypatch.setattr(worker, "execute", execute)
    monkeypatch.setattr(environment, "driver_version", lambda: ("550.54.15", None))
    rec = run_cell(cell("lora"))
    assert rec.status == "error" and rec.device.driver == driver
    assert rec.device.cuda == (torch.version.cuda if kind == "cuda" else None)
