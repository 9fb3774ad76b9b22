"""The training scenario's record: accuracy before and after, the loss of every step (warm-up
included), the timed steps only, the training peak apart from evaluation's, the optimizer's state;
and with evaluation off, no accuracy and a note."""
from __future__ import annotations

import warnings
from typing import Any

import pytest

from bench.exec.worker import run_cell
from tests.helpers import cell


@pytest.fixture(autouse=True)
def _quiet() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def test_a_training_cell_fills_every_block() -> None:
    rec = run_cell(cell("lora", options={"r": 4}, steps=3, warmup_steps=2, eval_examples=8))
    assert rec.status == "ok", rec.error
    q, t, m = rec.quality, rec.time, rec.memory
    assert len(q.train_loss) == 5 and (q.train_loss_first, q.train_loss_last) == (q.train_loss[0], q.train_loss[-1])
    assert 0 <= q.accuracy_before <= 1 and 0 <= q.accuracy <= 1 and q.eval_examples == 8
    assert q.accuracy_note is None  # synthetic text: accuracy means something even on random weights
    assert len(t.step_s) == 3 and t.train_s >= sum(t.step_s) and t.eval_s > 0
    assert t.tokens_per_step == 4 * 32  # synthetic rows fill seq_len: every token is real
    # (the sizes are checked in a fresh cell process in tests/exec/test_runner.py: in this long-lived
    # test process the allocator reuses pages freed by earlier tests, and a peak may not rise at all)
    assert m.peak_rss_above_baseline_bytes is not None and m.eval_peak_rss_above_baseline_bytes is not None
    assert m.breakdown.measured_bytes == m.peak_rss_above_baseline_bytes  # training's peak, not evaluation's
    assert rec.optimizer.name == "adamw" and rec.optimizer.state_bytes_device > 0
    assert rec.optimizer.paged_active is False
    # the checkpoint holds the trainable weights (fp32) and a header naming them
    assert 4 * rec.params.trainable < rec.checkpoint_bytes < 4 * rec.params.trainable + 64 * 2**10


def test_evaluation_off_reports_no_accuracy() -> None:
    rec = run_cell(cell("lora", options={"r": 2}, steps=1, warmup_steps=0, eval_examples=0))
    assert rec.status == "ok", rec.error
    q = rec.quality
    assert q.accuracy is None and q.accuracy_before is None and q.eval_examples == 0
    assert q.accuracy_note == "evaluation off (eval_examples = 0)"
    assert rec.time.eval_s is None and rec.memory.eval_peak_rss_above_baseline_bytes is None
