"""In-context learning (methods/icl.py): demonstrations, frozen weights, and its record (the
evaluation-only scenario: the inference peak is the cell's only peak)."""
from __future__ import annotations

from typing import Any

import pytest

from bench.catalog.tasks import Example
from bench.errors import ConfigError
from bench.exec.worker import run_cell
from methods.icl import IclOptions, pick_demonstrations
from tests.helpers import built, cell

ICL = dict(seq_len=192, steps=1, warmup_steps=0, eval_examples=16, eval_batch_size=8)


def icl(model: str, shots: int = 4) -> Any:
    return cell("icl", model, {"shots": shots}, **ICL)


def test_record_on_a_causal_lm() -> None:
    rec = run_cell(icl("tiny-llama"))
    assert rec.status == "ok", rec.error
    q, t, m = rec.quality, rec.time, rec.memory
    assert 0.0 <= q.accuracy <= 1.0 and q.accuracy_before is None
    assert q.eval_examples == 16 and q.train_loss == []
    assert rec.params.trainable == 0
    assert t.step_s == [] and t.step_s_median is None and t.train_s is None
    assert t.eval_examples_per_s > 0
    assert m.peak_rss_bytes > 0
    # the inference peak is this method's only peak: the training fields hold evaluation's interval
    assert m.peak_rss_above_baseline_bytes == m.eval_peak_rss_above_baseline_bytes
    assert rec.flops.flops_per_step is None and "trains nothing" in rec.flops.mfu_note
    assert rec.quality.forgetting_note == "the method trains nothing: nothing to forget"
    assert rec.checkpoint_bytes == 0


def test_encoder_is_unsupported_with_the_reason() -> None:
    rec = run_cell(icl("tiny-bert"))
    assert rec.status == "unsupported"
    assert "causal LM" in rec.error and "tiny-bert" in rec.error


def test_without_evaluation_it_is_refused_before_the_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.catalog import models

    def no_load(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model loaded")

    monkeypatch.setattr(models, "load_model", no_load)
    rec = run_cell(cell("icl", "tiny-llama", {"shots": 4}, **{**ICL, "eval_examples": 0}))
    assert rec.status == "unsupported", rec.error
    assert "trains nothing" in rec.error and "eval_examples = 0" in rec.error and "eval_examples > 0" in rec.error
    assert rec.failed_phase is None and rec.params.total is None and rec.memory.peak_rss_bytes is None


def test_every_method_that_trains_nothing_needs_an_evaluation() -> None:
    import dataclasses

    from bench import build
    from bench.method import Method
    from tests.helpers import TINY

    class Looker(Method):  # decided by `trains`, not by a method's name
        name = "looker"
        trains = False

    off = dataclasses.replace(TINY, eval_examples=0)
    assert "method 'looker' trains nothing" in build.unmeasured_reason(Looker(None), off)
    assert build.unmeasured_reason(Looker(None), TINY) is None
    assert build.unmeasured_reason(Method(None), off) is None  # a method that trains measures its steps


def test_every_parameter_is_frozen_and_prompts_carry_the_demonstrations() -> None:
    b = built("icl", "tiny-llama", {"shots": 2}, **ICL)
    assert not any(p.requires_grad for p in b.model.parameters())
    assert len(b.batcher.demos) == 2 and all(d in b.plan.task.train for d in b.batcher.demos)
    zero_shot = built("icl", "tiny-llama", {"shots": 0}, **ICL)
    assert zero_shot.batcher.demos == []
    ex = b.plan.task.test[0]
    with_demos, alone = (bytes(i - 3 for i in x.batcher.encode(ex).input_ids[1:]).decode() for x in (b, zero_shot))
    assert with_demos.count("Sentiment:") == 3 and alone.count("Sentiment:") == 1  # two demonstrations, the question
    assert len(b.batcher.encode(ex).input_ids) <= ICL["seq_len"]


def test_demonstrations_are_seeded_and_balanced() -> None:
    train = [Example(f"text {i}", int(i % 3 == 0)) for i in range(60)]  # one positive in three
    first = pick_demonstrations(train, 6, 2, seed=0)
    assert first == pick_demonstrations(train, 6, 2, seed=0)
    assert first != pick_demonstrations(train, 6, 2, seed=1)
    assert sorted(e.label for e in first) == [0, 0, 0, 1, 1, 1]
    assert len({e.text for e in first}) == 6
    # a label that runs out leaves the rest to the others
    few = [Example("only positive", 1)] + [Example(f"neg {i}", 0) for i in range(5)]
    assert sorted(e.label for e in pick_demonstrations(few, 4, 2, seed=0)) == [0, 0, 0, 1]
    assert len(pick_demonstrations(few, 10, 2, seed=0)) == len(few)


def test_negative_shots_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="shots = -1: must be >= 0"):
        IclOptions(shots=-1)
