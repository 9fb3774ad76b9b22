"""Bottleneck adapters (methods/houlsby.py, methods/pfeiffer.py, methods/_bottleneck.py) on the
tiny built-in models: identity at init, exact trainable counts, training, save and reload."""
from __future__ import annotations

import pytest
import torch

from tests.helpers import losses_on_one_batch

from bench import build, schema
from bench.config import Cell, MethodSpec, ModelSpec, Settings, TaskSpec
from bench.errors import ConfigError, UnsupportedError
from bench.method import CellContext, ModelInfo
from bench.registry import method_class
from methods._bottleneck import load_adapter, save_adapter

MODELS = ["tiny-llama", "tiny-qwen2", "tiny-gpt2", "tiny-bert"]
D, LAYERS = 64, 2  # every tiny built-in
# Norm parameters per layer (two norms a layer; RMSNorm has a weight, LayerNorm a weight and a bias)
NORMS_PER_LAYER = {"tiny-llama": 2 * D, "tiny-qwen2": 2 * D, "tiny-gpt2": 4 * D, "tiny-bert": 4 * D}
HEAD = {"tiny-bert": D * 2 + 2}  # the classification head over two labels
SITES_PER_LAYER = {"houlsby": 2, "pfeiffer": 1}


def cell(model: str, method: str, options: dict | None = None, **settings) -> Cell:
    s = Settings(**{"batch_size": 4, "seq_len": 32, "eval_examples": 16, "steps": 2, "warmup_steps": 0, **settings})
    return Cell(ModelSpec(model), MethodSpec(method, method, options or {}), TaskSpec("synthetic", {}), s, 0)


def built(model: str, method: str, options: dict | None = None, **settings) -> build.Built:
    return build.build(build.plan(cell(model, method, options, **settings), torch.device("cpu")))


def first_batch(b: build.Built) -> dict[str, torch.Tensor]:
    return next(b.batcher.train_batches(4, 1, 0, torch.device("cpu")))


@pytest.mark.parametrize("method", ["houlsby", "pfeiffer"])
@pytest.mark.parametrize("model", MODELS)
def test_identity_at_init(model: str, method: str) -> None:
    base = built(model, "full")
    batch = first_batch(base)
    base.model.eval()
    with torch.no_grad():
        before = base.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        plan = build.plan(cell(model, method, {"m": 8}), torch.device("cpu"))
        adapted = plan.method.adapt(base.model, plan.ctx)
        after = adapted(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert plan.ctx.notes["adapter_count"] == SITES_PER_LAYER[method] * LAYERS
    assert (after - before).abs().max().item() < 1e-6


@pytest.mark.parametrize("method", ["houlsby", "pfeiffer"])
@pytest.mark.parametrize("model", MODELS)
def test_trainable_count_matches_formula(model: str, method: str) -> None:
    m = 8
    b = built(model, method, {"m": m})
    adapters = SITES_PER_LAYER[method] * LAYERS
    norms = NORMS_PER_LAYER[model] * LAYERS if method == "houlsby" else 0
    expected = adapters * (2 * D * m + D + m) + norms + HEAD.get(model, 0)
    assert sum(p.numel() for p in b.trainable) == expected
    assert {id(p) for p in b.trainable} == {id(p) for p in b.model.parameters() if p.requires_grad}


def test_options_layers_reduction_and_no_layer_norms() -> None:
    # reduction_factor 16 on d = 64 gives m = 4; one layer only; norms frozen
    b = built("tiny-llama", "houlsby", {"reduction_factor": 16, "layers": [1], "train_layer_norms": False})
    assert sum(p.numel() for p in b.trainable) == 2 * (2 * D * 4 + D + 4)
    assert all(".layers.1." in n for n, p in b.model.named_parameters() if p.requires_grad)
    assert b.plan.ctx.notes == {"bottleneck_size": 4, "adapter_count": 2}


@pytest.mark.parametrize("method", ["houlsby", "pfeiffer"])
@pytest.mark.parametrize("model", ["tiny-llama", "tiny-bert"])
def test_loss_goes_down(model: str, method: str) -> None:
    losses = losses_on_one_batch(built(model, method, {"m": 8}))
    assert losses[-1] < losses[0], losses


def test_adapters_follow_the_weights_dtype() -> None:
    b = built("tiny-llama", "houlsby", {"m": 8, "activation": "gelu"}, precision="bf16")
    adapter = [p for n, p in b.model.named_parameters() if ".bottleneck." in n]
    assert adapter and all(p.dtype == torch.bfloat16 for p in adapter)
    loss = b.model(**first_batch(b)).loss
    loss.backward()
    assert all(p.grad is not None for p in adapter)


def test_save_and_reload_gives_the_same_outputs(tmp_path) -> None:
    trained = built("tiny-llama", "houlsby", {"m": 8})
    losses_on_one_batch(trained, steps=3)
    path = tmp_path / "adapter.safetensors"
    save_adapter(trained.model, path)
    fresh = built("tiny-llama", "houlsby", {"m": 8})  # same seed: same base weights, adapters at init
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
    save_adapter(built("tiny-llama", "houlsby", {"m": 8}).model, path)
    with pytest.raises(ValueError, match="shape"):
        load_adapter(built("tiny-llama", "houlsby", {"m": 4}).model, path)
    with pytest.raises(ValueError, match="no place"):
        load_adapter(built("tiny-llama", "pfeiffer", {"m": 8}).model, path)


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
    with pytest.raises(UnsupportedError, match="do not exist"):
        build.plan(cell("tiny-llama", "pfeiffer", {"layers": [2]}), torch.device("cpu"))
    with pytest.raises(UnsupportedError, match="no bottleneck"):
        build.plan(cell("tiny-llama", "pfeiffer", {"reduction_factor": 128.0}), torch.device("cpu"))


def test_unknown_architecture_is_unsupported() -> None:
    class Odd(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = torch.nn.ModuleList(torch.nn.Linear(D, D) for _ in range(LAYERS))

    info = ModelInfo("odd", "causal", "odd", D, LAYERS, 320, True)
    ctx = CellContext(info, Settings(), torch.device("cpu"), torch.float32, torch.float32, 0)
    method = method_class("houlsby")(schema.build(method_class("houlsby").Config, {}, "options"))
    with pytest.raises(UnsupportedError, match="no list of transformer layers"):
        method.adapt(Odd(), ctx)
