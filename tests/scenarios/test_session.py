"""What every kind of cell does around its scenario (bench/scenarios/session.py): the task's data in
the record, no accuracy where it would mean nothing, the memory model's prediction (never a failed
cell), and the trainable weights' checkpoint size."""
from __future__ import annotations

from typing import Any

import pytest
import torch

from bench.exec.worker import run_cell
from bench.scenarios import session
from tests.catalog.test_mr import MR_SPLIT_SHA256
from tests.helpers import cell


def test_every_record_carries_the_task_data_and_random_weights_report_no_accuracy() -> None:
    rec = run_cell(cell("full", task="mr", steps=1, warmup_steps=0, eval_examples=4))
    assert rec.status == "ok", rec.error
    assert rec.task_data.split_sha256 == MR_SPLIT_SHA256
    assert rec.task_data.sizes == {"train": 8530, "validation": 1066, "test": 1066}
    # random weights on natural text: no accuracy, before or after, and a note saying why
    q = rec.quality
    assert q.accuracy is None and q.accuracy_before is None and q.eval_examples == 0
    assert q.accuracy_note.startswith("random weights: accuracy on mr would mean nothing")
    # the trainable weights' checkpoint holds every parameter (full fine-tuning), 4 bytes each
    assert rec.checkpoint_bytes > 4 * rec.params.trainable
    assert rec.memory.predicted.peak_bytes is not None or rec.memory.predicted.notes


def test_a_prediction_that_fails_is_a_note_not_a_failed_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.predict

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("no formula")

    monkeypatch.setattr(bench.predict, "predict", broken)
    assert session.predicted(cell("lora"), "cpu") == {"peak_bytes": None,
                                                      "notes": ["no prediction: KeyError: 'no formula'"]}


def test_checkpoint_bytes_is_the_safetensors_size() -> None:
    assert session.checkpoint_bytes({}) == 0
    size = session.checkpoint_bytes({"a": torch.ones(100, 10), "b": torch.ones(5, dtype=torch.bfloat16)})
    assert 100 * 10 * 4 + 5 * 2 < size < 100 * 10 * 4 + 5 * 2 + 1024  # the tensors and a small header
