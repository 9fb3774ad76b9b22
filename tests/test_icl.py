"""In-context learning (methods/icl.py): demonstrations, frozen weights, and its record."""
from __future__ import annotations

import pytest
import torch

from bench import build
from bench.config import Cell, MethodSpec, ModelSpec, Settings, TaskSpec
from bench.errors import ConfigError
from bench.tasks import Example
from bench.worker import run_cell
from methods.icl import IclOptions, pick_demonstrations


def cell(model: str, shots: int = 4) -> Cell:
    s = Settings(batch_size=4, seq_len=64, steps=1, warmup_steps=0, eval_examples=16, eval_batch_size=8, threads=2)
    return Cell(ModelSpec(model), MethodSpec("icl", "icl", {"shots": shots}), TaskSpec("synthetic", {}), s, 0)


def test_record_on_a_causal_lm() -> None:
    rec = run_cell(cell("tiny-llama"))
    assert rec["status"] == "ok", rec["error"]
    q, t = rec["quality"], rec["time"]
    assert 0.0 <= q["accuracy"] <= 1.0
    assert q["eval_examples"] > 0
    assert rec["params"]["trainable"] == 0
    assert not t.get("step_s")
    assert t["train_s"] is None
    assert t["eval_examples_per_s"] > 0
    assert rec["memory"]["peak_rss_bytes"] > 0
    assert rec["checkpoint_bytes"] == 0


def test_encoder_is_unsupported_with_the_reason() -> None:
    rec = run_cell(cell("tiny-bert"))
    assert rec["status"] == "unsupported"
    assert "causal LM" in rec["error"] and "tiny-bert" in rec["error"]


def test_every_parameter_is_frozen_and_prompts_carry_the_demonstrations() -> None:
    b = build.build(build.plan(cell("tiny-llama", shots=2), torch.device("cpu")))
    assert not any(p.requires_grad for p in b.model.parameters())
    assert len(b.batcher.demos) == 2
    zero_shot = build.build(build.plan(cell("tiny-llama", shots=0), torch.device("cpu")))
    assert zero_shot.batcher.demos == []
    ex = b.plan.task.test[0]
    assert len(b.batcher.encode(ex).input_ids) > len(zero_shot.batcher.encode(ex).input_ids)


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
    with pytest.raises(ConfigError, match="shots"):
        IclOptions(shots=-1)
