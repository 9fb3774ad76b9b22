"""Prefix tuning and (IA)^3 through peft (methods/prefix_tuning.py, methods/ia3.py) on tiny models."""
from __future__ import annotations

import pytest
import transformers

from bench.errors import ConfigError, UnsupportedError
from bench.exec.worker import run_cell
from methods.ia3 import Ia3Options, derive_targets
from tests.helpers import bert_takes_past_key_values, built, cell, losses_on_one_batch, tiny_config

FAST = dict(steps=2, warmup_steps=0, eval_batch_size=8)


@pytest.mark.parametrize("model, method, options", [
    ("tiny-llama", "prefix_tuning", {"num_virtual_tokens": 4}),
    ("tiny-llama", "prefix_tuning", {"num_virtual_tokens": 4, "projection": True}),
    ("tiny-llama", "ia3", {}),
    ("tiny-bert", "ia3", {}),
])
def test_loss_goes_down(model: str, method: str, options: dict) -> None:
    b = built(method, model, options)
    assert 0 < sum(p.numel() for p in b.trainable) < sum(p.numel() for p in b.model.parameters()) // 10
    losses = losses_on_one_batch(b, lr=3e-2)
    assert losses[-1] < losses[0], losses


def test_prefix_tuning_on_an_encoder_is_decided_by_trying() -> None:
    # Whether BERT's forward takes past_key_values depends on the transformers version (5.17: yes,
    # 5.24: no). Where it does, the cell trains; where not, it is unsupported, in the adapt phase,
    # with the reason and the version.
    rec = run_cell(cell("prefix_tuning", "tiny-bert", {"num_virtual_tokens": 4}, **FAST))
    if bert_takes_past_key_values():
        assert rec.status == "ok", rec.error
        assert rec.params.trainable and rec.quality.train_loss_last is not None
        return
    assert rec.status == "unsupported", rec.error
    assert "past_key_values" in rec.error and f"transformers {transformers.__version__}" in rec.error
    assert "BertForSequenceClassification" in rec.error


def test_a_model_that_ignores_the_prefixes_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers.models.llama import modeling_llama

    real = modeling_llama.LlamaModel.forward

    def drops_past(self, *args, **kwargs):  # a forward that accepts a key/value cache and ignores it
        kwargs.pop("past_key_values", None)
        kwargs.pop("cache", None)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(modeling_llama.LlamaModel, "forward", drops_past)
    with pytest.raises(UnsupportedError, match="does not take in transformers"):
        built("prefix_tuning", "tiny-llama", {"num_virtual_tokens": 4})


def test_prefix_tuning_cell_trains_and_evaluates() -> None:
    # evaluation left-pads and passes position_ids and logits_to_keep; the prefix must cope
    rec = run_cell(cell("prefix_tuning", "tiny-llama", {"num_virtual_tokens": 4}, **FAST))
    assert rec.status == "ok", rec.error
    config = tiny_config("tiny-llama")
    kv_width = config.num_key_value_heads * config.hidden_size // config.num_attention_heads
    # layers x tokens x (key, value) x the key/value width
    assert rec.params.trainable == config.num_hidden_layers * 4 * 2 * kv_width
    assert 0.0 <= rec.quality.accuracy <= 1.0


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-qwen2", "tiny-gpt2", "tiny-bert"])
def test_ia3_derived_targets_match_the_structure(model: str) -> None:
    b = built("full", model)
    layers = tiny_config(model).num_hidden_layers
    targets, feedforward = derive_targets(b.model, layers)
    leaves = {n.rsplit(".", 1)[-1] for n in targets}
    expected = {"tiny-llama": {"k_proj", "v_proj", "down_proj"}, "tiny-qwen2": {"k_proj", "v_proj", "down_proj"},
                "tiny-gpt2": {"c_attn", "c_proj"}, "tiny-bert": {"key", "value", "dense"}}[model]
    assert leaves == expected
    assert len(feedforward) == layers and set(feedforward) <= set(targets)
    assert all(".attention." not in n and ".attn." not in n and ".self_attn." not in n for n in feedforward)


def test_ia3_derived_targets_train_like_peft_defaults() -> None:
    b = built("full", "tiny-llama")
    targets, feedforward = derive_targets(b.model, tiny_config("tiny-llama").num_hidden_layers)
    derived = built("ia3", "tiny-llama", {"target_modules": targets, "feedforward_modules": feedforward})
    default = built("ia3", "tiny-llama")
    names = lambda x: {n for n, p in x.model.named_parameters() if p.requires_grad}  # noqa: E731
    assert names(derived) == names(default)
    assert default.plan.ctx.notes["ia3_targets"] == "peft defaults"
    assert derived.plan.ctx.notes["ia3_targets"] == "options"


def test_ia3_derives_targets_for_a_model_type_peft_does_not_know(monkeypatch: pytest.MonkeyPatch) -> None:
    from peft.utils import constants

    default = built("ia3", "tiny-llama")
    for table in ("TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING",
                  "TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING"):
        monkeypatch.delitem(getattr(constants, table), "llama")
    derived = built("ia3", "tiny-llama")
    assert derived.plan.ctx.notes["ia3_targets"] == "derived from the model structure"
    names = lambda x: {n for n, p in x.model.named_parameters() if p.requires_grad}  # noqa: E731
    assert names(derived) == names(default)


@pytest.mark.parametrize("options, match", [
    ({"target_modules": ["k_proj"]}, "or neither"),
    ({"target_modules": ["k_proj"], "feedforward_modules": ["down_proj"]}, "subset"),
])
def test_ia3_bad_options(options: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Ia3Options(**options)
