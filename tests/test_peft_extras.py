"""Prefix tuning and (IA)^3 through peft (methods/prefix_tuning.py, methods/ia3.py) on tiny models."""
from __future__ import annotations

import pytest
import torch
import transformers

from tests.helpers import losses_on_one_batch

from bench import build
from bench.config import Cell, MethodSpec, ModelSpec, Settings, TaskSpec
from bench.errors import ConfigError, UnsupportedError
from bench.worker import run_cell
from methods.ia3 import Ia3Options, derive_targets


def cell(model: str, method: str, options: dict | None = None) -> Cell:
    s = Settings(batch_size=4, seq_len=32, steps=2, warmup_steps=0, eval_examples=16, eval_batch_size=8, threads=2)
    return Cell(ModelSpec(model), MethodSpec(method, method, options or {}), TaskSpec("synthetic", {}), s, 0)


def built(model: str, method: str, options: dict | None = None) -> build.Built:
    return build.build(build.plan(cell(model, method, options), torch.device("cpu")))


@pytest.mark.parametrize("model, method, options", [
    ("tiny-llama", "prefix_tuning", {"num_virtual_tokens": 4}),
    ("tiny-llama", "prefix_tuning", {"num_virtual_tokens": 4, "projection": True}),
    ("tiny-llama", "ia3", {}),
    ("tiny-bert", "ia3", {}),
])
def test_loss_goes_down(model: str, method: str, options: dict) -> None:
    b = built(model, method, options)
    assert 0 < sum(p.numel() for p in b.trainable) < sum(p.numel() for p in b.model.parameters()) // 10
    losses = losses_on_one_batch(b, lr=3e-2)
    assert losses[-1] < losses[0], losses


def test_prefix_tuning_on_an_encoder_is_decided_by_trying() -> None:
    # Whether BERT's forward takes past_key_values depends on the transformers version: either the
    # cell trains its prefixes, or it is unsupported with the reason and the version.
    rec = run_cell(cell("tiny-bert", "prefix_tuning", {"num_virtual_tokens": 4}))
    if rec["status"] == "unsupported":
        assert "past_key_values" in rec["error"] and transformers.__version__ in rec["error"]
    else:
        assert rec["status"] == "ok", rec["error"]
        assert rec["params"]["trainable"] > 0 and rec["quality"]["train_loss_last"] is not None


def test_a_model_that_ignores_the_prefixes_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers.models.llama import modeling_llama

    real = modeling_llama.LlamaModel.forward

    def drops_past(self, *args, **kwargs):  # a forward that accepts a key/value cache and ignores it
        kwargs.pop("past_key_values", None)
        kwargs.pop("cache", None)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(modeling_llama.LlamaModel, "forward", drops_past)
    with pytest.raises(UnsupportedError, match="does not take in transformers"):
        built("tiny-llama", "prefix_tuning", {"num_virtual_tokens": 4})


def test_prefix_tuning_cell_trains_and_evaluates() -> None:
    # evaluation left-pads and passes position_ids and logits_to_keep; the prefix must cope
    rec = run_cell(cell("tiny-llama", "prefix_tuning", {"num_virtual_tokens": 4}))
    assert rec["status"] == "ok", rec["error"]
    assert rec["params"]["trainable"] == 2 * 4 * 2 * 32  # layers x tokens x (key, value) x kv width
    assert 0.0 <= rec["quality"]["accuracy"] <= 1.0


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-qwen2", "tiny-gpt2", "tiny-bert"])
def test_ia3_derived_targets_match_the_structure(model: str) -> None:
    b = built(model, "full")
    targets, feedforward = derive_targets(b.model, 2)
    leaves = {n.rsplit(".", 1)[-1] for n in targets}
    expected = {"tiny-llama": {"k_proj", "v_proj", "down_proj"}, "tiny-qwen2": {"k_proj", "v_proj", "down_proj"},
                "tiny-gpt2": {"c_attn", "c_proj"}, "tiny-bert": {"key", "value", "dense"}}[model]
    assert leaves == expected
    assert len(feedforward) == 2 and set(feedforward) <= set(targets)
    assert all(".attention." not in n and ".attn." not in n and ".self_attn." not in n for n in feedforward)


def test_ia3_derived_targets_train_like_peft_defaults() -> None:
    b = built("tiny-llama", "full")
    targets, feedforward = derive_targets(b.model, 2)
    derived = built("tiny-llama", "ia3", {"target_modules": targets, "feedforward_modules": feedforward})
    default = built("tiny-llama", "ia3")
    names = lambda x: {n for n, p in x.model.named_parameters() if p.requires_grad}  # noqa: E731
    assert names(derived) == names(default)
    assert default.plan.ctx.notes["ia3_targets"] == "peft defaults"


@pytest.mark.parametrize("options, match", [
    ({"target_modules": ["k_proj"]}, "or neither"),
    ({"target_modules": ["k_proj"], "feedforward_modules": ["down_proj"]}, "subset"),
])
def test_ia3_bad_options(options: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Ia3Options(**options)
