"""The worker: a failing cell says where it failed (phase, training step), keeps its last frames in
the record and prints the whole traceback to its log (the cell process's stderr)."""
from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

from bench.worker import run_cell
from tests.helpers import cell


@pytest.fixture(autouse=True)
def _quiet() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


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
    assert rec["status"] == "error"
    assert (rec["failed_phase"], rec["failed_step"]) == ("training", 2)  # the third step, 0-based
    assert rec["error"] == "RuntimeError at training step 2: boom in the optimizer"
    assert "boom in the optimizer" in rec["traceback"]
    log = capsys.readouterr().err
    assert "cell failed at training step 2" in log and "Traceback (most recent call last)" in log
    assert "bench/worker.py" in log  # the whole traceback, from the worker's frames down


def test_an_out_of_memory_step_is_an_oom_record(monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_on_call(monkeypatch, torch.optim.AdamW, "step", 2, torch.OutOfMemoryError("no room"))
    rec = run_cell(cell("lora", options={"r": 2}, steps=3, warmup_steps=1, eval_examples=0))
    assert (rec["status"], rec["failed_phase"], rec["failed_step"]) == ("oom", "training", 1)
    assert rec["error"].startswith("out of memory at training step 1")


def _owner(phase: str) -> Any:
    import bench.evaluate
    import bench.models
    import methods.lora

    return {"load": bench.models, "adapt": methods.lora.Lora, "evaluation before": bench.evaluate}[phase]


@pytest.mark.parametrize("phase, name", [("load", "load_model"), ("adapt", "adapt"), ("evaluation before", "evaluate")])
def test_failures_outside_training_name_their_phase(phase: str, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_on_call(monkeypatch, _owner(phase), name, 1, ValueError(f"broken {phase}"))
    rec = run_cell(cell("lora", options={"r": 2}, steps=1, warmup_steps=0, eval_examples=4))
    assert (rec["status"], rec["failed_phase"], rec["failed_step"]) == ("error", phase, None)
    assert f"in phase '{phase}'" in rec["error"] and f"broken {phase}" in rec["error"]


def test_an_ok_record_has_no_failure_fields() -> None:
    rec = run_cell(cell("lora", options={"r": 2}, steps=1, warmup_steps=0, eval_examples=0))
    assert rec["status"] == "ok" and rec["failed_phase"] is None and rec["failed_step"] is None
    assert "traceback" not in rec
