"""The training scenario's record: accuracy before and after, the loss of every step (warm-up
included), the timed steps only, the training peak apart from evaluation's, the optimizer's state,
the validation split's accuracy after training (its own size, its own time); with evaluation off,
no accuracy and a note, as where the validation accuracy cannot be had; and training that learns:
full fine-tuning and LoRA take tiny models from chance to 0.9 on the synthetic task."""
from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from bench.catalog.tasks import load_task
from bench.exec.worker import run_cell
from bench.spec import ModelSpec, TaskSpec
from tests.helpers import cell


def test_a_training_cell_fills_every_block() -> None:
    rec = run_cell(cell("lora", options={"r": 4}, steps=3, warmup_steps=2, eval_examples=8))
    assert rec.status == "ok", rec.error
    q, t, m = rec.quality, rec.time, rec.memory
    assert len(q.train_loss) == 5 and (q.train_loss_first, q.train_loss_last) == (q.train_loss[0], q.train_loss[-1])
    assert 0 <= q.accuracy_before <= 1 and 0 <= q.accuracy <= 1 and q.eval_examples == 8
    assert q.accuracy_note is None  # synthetic text: accuracy means something even on random weights
    # the validation pass: as many examples as the test evaluation when validation_examples is unset
    assert 0 <= q.validation_accuracy <= 1 and q.validation_examples == 8 and q.validation_note is None
    assert t.validation_eval_s > 0
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


# Measured on seeds 0 to 3 (this test runs seed 0): tiny-llama full 0.945 to 0.965; tiny-bert full
# 0.975 to 0.99 and LoRA 0.96 to 0.98. LoRA on the tiny Llama stays near chance: its frozen random
# LM head (weights of std 0.02 on a normalised state) bounds every logit to about +-1.3, so the
# label words' loss cannot leave ~4.6; the encoder's classification head is trained with LoRA.
LEARNS = [("tiny-llama", "full", {}, 1e-3, 150), ("tiny-bert", "full", {}, 7e-4, 120),
          ("tiny-bert", "lora", {}, 3e-3, 200)]


@pytest.mark.parametrize("model, method, options, lr, steps", LEARNS, ids=[f"{m}-{x}" for m, x, *_ in LEARNS])
def test_training_learns_the_synthetic_task(model: str, method: str, options: dict[str, Any], lr: float,
                                            steps: int) -> None:
    """From chance to at least 0.9 test accuracy through the harness's own loop: a training step that
    does nothing (no update, the wrong parameters, the gradients lost) leaves the accuracy near 0.5."""
    rec = run_cell(cell(method, model, options, steps=steps, warmup_steps=0, lr=lr, batch_size=16, seq_len=64,
                        eval_examples=200, validation_examples=0))
    assert rec.status == "ok", rec.error
    q = rec.quality
    assert q.accuracy_before < 0.6 and q.eval_examples == 200  # random weights: chance before training
    assert q.accuracy >= 0.9, (q.accuracy_before, q.accuracy, q.train_loss_first, q.train_loss_last)
    assert q.train_loss_last < q.train_loss_first


def test_evaluation_off_reports_no_accuracy() -> None:
    rec = run_cell(cell("lora", options={"r": 2}, steps=1, warmup_steps=0, eval_examples=0))
    assert rec.status == "ok", rec.error
    q = rec.quality
    assert q.accuracy is None and q.accuracy_before is None and q.eval_examples == 0
    assert q.accuracy_note == "evaluation off (eval_examples = 0)"
    assert rec.time.eval_s is None and rec.memory.eval_peak_rss_above_baseline_bytes is None
    # unset, validation_examples follows eval_examples: no validation pass either
    assert q.validation_accuracy is None and q.validation_examples == 0 and rec.time.validation_eval_s is None
    assert q.validation_note == "validation off (validation_examples unset follows eval_examples = 0)"


def test_the_validation_pass_has_its_own_size_and_scores_the_validation_split(monkeypatch) -> None:
    from bench.measure import accuracy
    from bench.scenarios import evaluation

    scored: list[list[Any]] = []

    def spy(model, batcher, examples, *args, **kwargs):
        scored.append(list(examples))
        return real(model, batcher, examples, *args, **kwargs)

    real = accuracy.evaluate
    monkeypatch.setattr(evaluation, "evaluate", spy)
    c = cell("lora", options={"r": 2}, steps=1, warmup_steps=0, eval_examples=6, validation_examples=5)
    rec = run_cell(c)
    assert rec.status == "ok", rec.error
    assert rec.quality.validation_examples == 5 and rec.quality.eval_examples == 6
    task = load_task(c.task)
    assert scored[-1] == task.validation[:5]  # the last evaluation is the validation pass, on its split
    assert not set(map(id, scored[-1])) & set(map(id, task.test))


@pytest.mark.parametrize(("changes", "note"), [
    ({"validation_examples": 0}, "validation off (validation_examples = 0)"),
    ({"task": TaskSpec("synthetic", {"validation_size": 0})}, "the task synthetic has no validation split"),
    ({"model": ModelSpec("tiny-bert"), "task": TaskSpec("mr", {})},
     "random weights: accuracy on mr would mean nothing"),
])
def test_no_validation_accuracy_is_null_with_a_note(changes: dict[str, Any], note: str) -> None:
    base = cell("lora", options={"r": 2}, steps=1, warmup_steps=0, eval_examples=4)
    settings = {k: v for k, v in changes.items() if k not in ("task", "model")}
    rec = run_cell(dataclasses.replace(base, settings=dataclasses.replace(base.settings, **settings),
                                       **{k: v for k, v in changes.items() if k in ("task", "model")}))
    assert rec.status == "ok", rec.error
    q = rec.quality
    assert q.validation_accuracy is None and q.validation_examples == 0 and q.validation_note == note
    assert rec.time.validation_eval_s is None


def test_a_method_that_trains_nothing_records_the_validation_accuracy_too() -> None:
    rec = run_cell(cell("icl", options={"shots": 0}, eval_examples=4, validation_examples=3))
    assert rec.status == "ok", rec.error
    q = rec.quality
    assert 0 <= q.validation_accuracy <= 1 and q.validation_examples == 3 and rec.time.validation_eval_s > 0


def test_validation_examples_is_validated_and_stays_out_of_the_cell_id_at_its_default() -> None:
    from bench.errors import ConfigError

    with pytest.raises(ConfigError, match="validation_examples"):
        dataclasses.replace(cell("lora").settings, validation_examples=-1)
    base = cell("lora")
    assert "validation_examples" not in base.identity()["settings"]  # ids recorded before it existed stay
    assert cell("lora", validation_examples=16).cell_id != base.cell_id
