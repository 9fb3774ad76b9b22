"""The shared matrix: every registered method x tiny models through one set of checks."""
from __future__ import annotations

import pytest
import torch

from bench import build
from bench.errors import UnsupportedError
from bench.registry import load_methods
from tests.helpers import cell, losses_on_one_batch

MODELS = ["tiny-llama", "tiny-bert"]


def _built(method: str, model: str, **kw: object) -> build.Built:
    try:
        return build.build(build.plan(cell(method, model, **kw)))
    except UnsupportedError as exc:
        assert str(exc), "an unsupported cell must say why"
        pytest.skip(f"{method} on {model}: unsupported ({exc})")


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("method", list(load_methods()))
def test_training_steps_lower_the_loss(method: str, model: str) -> None:
    built = _built(method, model)
    if not built.plan.method.trains:
        assert not built.trainable, "a method that does not train must freeze every parameter"
        return
    assert built.trainable
    losses = losses_on_one_batch(built)
    assert losses[-1] < losses[0], f"{method} on {model}: loss {losses}"


def _linears(model: torch.nn.Module, skip: tuple[str, ...]) -> list[torch.nn.Linear]:
    return [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and not n.endswith(skip)]


def test_full_fine_tuning_trains_everything() -> None:
    built = _built("full", "tiny-llama")
    assert sum(p.numel() for p in built.trainable) == sum(p.numel() for p in built.model.parameters())


@pytest.mark.parametrize("model, head", [("tiny-llama", ()), ("tiny-bert", ("classifier",))])
def test_lora_trainable_count_is_r_times_in_plus_out(model: str, head: tuple[str, ...]) -> None:
    r = 4
    plan = build.plan(cell("lora", model, options={"r": r}))
    base = build.build(build.plan(cell("full", model))).model
    skip = ("lm_head", *head)
    expected = sum(r * (m.in_features + m.out_features) for m in _linears(base, skip))
    if head:  # the new classification head trains too (peft's modules_to_save)
        expected += sum(p.numel() for n, p in base.named_parameters() if n.startswith(head))
    built = build.build(plan)
    assert sum(p.numel() for p in built.trainable) == expected


@pytest.mark.parametrize("model", MODELS)
def test_prompt_tuning_trainable_count_is_tokens_times_hidden(model: str) -> None:
    built = _built("prompt_tuning", model, options={"num_virtual_tokens": 5})
    expected = 5 * built.plan.ctx.model.hidden_size
    if model == "tiny-bert":
        expected += sum(p.numel() for n, p in built.model.named_parameters()
                        if p.requires_grad and "classifier" in n)
    assert sum(p.numel() for p in built.trainable) == expected


@pytest.mark.parametrize("init", ["random", "vocab", "text"])
def test_prompt_tuning_inits(init: str) -> None:
    built = _built("prompt_tuning", "tiny-llama", options={"num_virtual_tokens": 4, "init": init})
    weight = built.model.prompt_encoder[built.model.active_adapter].embedding.weight
    vocab = built.model.get_input_embeddings().weight
    from_vocab = all(any(torch.equal(row, v) for v in vocab) for row in weight)
    assert from_vocab == (init != "random")
