"""Bottleneck adapters (methods/houlsby.py, methods/pfeiffer.py, methods/_bottleneck.py) on the
tiny built-in models: identity at init, exact trainable counts, training, save and reload."""
from __future__ import annotations

import pytest
import torch

from bench import build, schema
from bench.errors import ConfigError, UnsupportedError
from bench.method import CellContext, ModelInfo
from bench.registry import method_class
from bench.spec import Settings
from methods._bottleneck import load_adapter, save_adapter
from tests.helpers import built, cell, first_batch, losses_on_one_batch, tiny_config

MODELS = ["tiny-llama", "tiny-qwen2", "tiny-gpt2", "tiny-bert"]
# Norms per layer: two a layer; RMSNorm (Llama, Qwen2) has a weight, LayerNorm (GPT-2, BERT) a weight and a bias
NORM_TENSORS_PER_LAYER = {"tiny-llama": 2, "tiny-qwen2": 2, "tiny-gpt2": 4, "tiny-bert": 4}
SITES_PER_LAYER = {"houlsby": 2, "pfeiffer": 1}


def dims(model: str) -> tuple[int, int]:
    """(hidden size, layers) of a tiny built-in."""
    config = tiny_config(model)
    return config.hidden_size, config.num_hidden_layers


def head(model: str) -> int:
    """Parameters of the new classification head (encoders: hidden x two labels, and a bias)."""
    d, _ = dims(model)
    return d * 2 + 2 if model == "tiny-bert" else 0


@pytest.mark.parametrize("method", ["houlsby", "pfeiffer"])
@pytest.mark.parametrize("model", MODELS)
def test_identity_at_init(model: str, method: str) -> None:
    base = built("full", model)
    batch = first_batch(base)
    base.model.eval()
    with torch.no_grad():
        before = base.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        plan = build.plan(cell(method, model, {"m": 8}), torch.device("cpu"))
        adapted = plan.method.adapt(base.model, plan.ctx)
        after = adapted(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert plan.ctx.notes["adapter_count"] == SITES_PER_LAYER[method] * dims(model)[1]
    assert (after - before).abs().max().item() < 1e-6


@pytest.mark.parametrize("method", ["houlsby", "pfeiffer"])
@pytest.mark.parametrize("model", MODELS)
def test_trainable_count_matches_formula(model: str, method: str) -> None:
    m = 8
    d, layers = dims(model)
    b = built(method, model, {"m": m})
    adapters = SITES_PER_LAYER[method] * layers
    norms = NORM_TENSORS_PER_LAYER[model] * d * layers if method == "houlsby" else 0
    expected = adapters * (2 * d * m + d + m) + norms + head(model)
    assert sum(p.numel() for p in b.trainable) == expected
    assert {id(p) for p in b.trainable} == {id(p) for p in b.model.parameters() if p.requires_grad}


def test_options_layers_reduction_and_no_layer_norms() -> None:
    # reduction_factor 16 gives m = d // 16; the last layer only; norms frozen
    d, layers = dims("tiny-llama")
    m = d // 16
    b = built("houlsby", "tiny-llama", {"reduction_factor": 16, "layers": [layers - 1], "train_layer_norms": False})
    assert sum(p.numel() for p in b.trainable) == 2 * (2 * d * m + d + m)
    assert all(f".layers.{layers - 1}." in n for n, p in b.model.named_parameters() if p.requires_grad)
    assert b.plan.ctx.notes == {"bottleneck_size": m, "adapter_count": 2}


@pytest.mark.parametrize("method", ["houlsby", "pfeiffer"])
@pytest.mark.parametrize("model", ["tiny-llama", "tiny-bert"])
def test_loss_goes_down(model: str, method: str) -> None:
    losses = losses_on_one_batch(built(method, model, {"m": 8}))
    assert losses[-1] < losses[0], losses


def test_adapters_follow_the_weights_dtype() -> None:
    b = built("houlsby", "tiny-llama", {"m": 8, "activation": "gelu"}, precision="bf16")
    adapter = [p for n, p in b.model.named_parameters() if ".bottleneck." in n]
    assert adapter and all(p.dtype == torch.bfloat16 for p in adapter)
    loss = b.model(**first_batch(b)).loss
    loss.backward()
    assert all(p.grad is not None for p in adapter)


def test_save_and_reload_gives_the_same_outputs(tmp_path) -> None:
    trained = built("houlsby", "tiny-llama", {"m": 8})
    losses_on_one_batch(trained, steps=3)
    path = tmp_path / "adapter.safetensors"
    save_adapter(trained.model, path)
    fresh = built("houlsby", "tiny-llama", {"m": 8})  # same seed: same base weights, adapters at init
    batch = first_batch(trained)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        want = trained.model(**inputs).logits
        untouched = fresh.model.eval()(**inputs).logits
        load_adapter(fresh.model, path)
        got = fresh.model(**inputs).logits
    assert (want - untouched).abs().max().item() > 1e-4  # the training changed something to restore
    assert (got - want).abs().max().item() < 1e-6
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        saved = set(f.keys())
    assert saved == {n for n, p in trained.model.named_parameters() if p.requires_grad}
    assert all(".bottleneck." in n or "layernorm" in n for n in saved)


def test_reload_into_a_differently_adapted_model_fails(tmp_path) -> None:
    path = tmp_path / "adapter.safetensors"
    save_adapter(built("houlsby", "tiny-llama", {"m": 8}).model, path)
    with pytest.raises(ValueError, match="shape"):
        load_adapter(built("houlsby", "tiny-llama", {"m": 4}).model, path)
    with pytest.raises(ValueError, match="no place"):
        load_adapter(built("pfeiffer", "tiny-llama", {"m": 8}).model, path)


@pytest.mark.parametrize("options, match", [
    ({"m": 8, "reduction_factor": 4.0}, "not both"),
    ({"m": 0}, "positive"),
    ({"reduction_factor": -1}, "> 0"),
    ({"layers": [0, 0]}, "distinct"),
    ({"layers": [-1]}, ">= 0"),
    ({"activation": "swish"}, "valid choices"),
])
def test_bad_options_are_config_errors(options: dict, match: str) -> None:
    cls = method_class("houlsby")
    with pytest.raises(ConfigError, match=match):
        schema.build(cls.Config, options, "methods[0].options")


def test_options_that_do_not_fit_the_model_are_unsupported() -> None:
    d, layers = dims("tiny-llama")
    with pytest.raises(UnsupportedError, match=f"layers \\[{layers}\\] do not exist in tiny-llama, which has {layers}"):
        build.plan(cell("pfeiffer", "tiny-llama", {"layers": [layers]}), torch.device("cpu"))
    with pytest.raises(UnsupportedError, match=f"leaves no bottleneck for tiny-llama \\(hidden size {d}\\)"):
        build.plan(cell("pfeiffer", "tiny-llama", {"reduction_factor": 2.0 * d}), torch.device("cpu"))


def test_unknown_architecture_is_unsupported() -> None:
    d, layers = 8, 2  # a made-up model: no transformer layers in it

    class Odd(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = torch.nn.ModuleList(torch.nn.Linear(d, d) for _ in range(layers))

    info = ModelInfo("odd", "causal", "odd", d, layers, 320, True)
    ctx = CellContext(info, Settings(), torch.device("cpu"), torch.float32, torch.float32, 0)
    method = method_class("houlsby")(schema.build(method_class("houlsby").Config, {}, "options"))
    with pytest.raises(UnsupportedError, match="no list of transformer layers"):
        method.adapt(Odd(), ctx)
