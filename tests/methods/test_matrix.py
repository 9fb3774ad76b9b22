"""The shared matrix: every registered method x tiny models through one set of checks. A pair that
cannot run must be listed in EXPECTED_UNSUPPORTED (tests/helpers.py, with what its reason says); any other
UnsupportedError fails, and so does a listed pair that runs."""
from __future__ import annotations

import pytest
import torch

from bench import build
from bench.catalog.models import BUILTIN
from bench.errors import UnsupportedError
from bench.registry import load_methods
from tests.helpers import EXPECTED_UNSUPPORTED, built, cell, losses_on_one_batch, tiny_config

MODELS = ["tiny-llama", "tiny-bert"]


def _built(method: str, model: str, **kw: object) -> build.Built | None:
    """The built cell; None for an expected-unsupported pair, after checking that it is refused
    with its reason."""
    reason = EXPECTED_UNSUPPORTED.get((method, model))
    if reason is None:
        return built(method, model, **kw)  # an UnsupportedError here fails the test
    with pytest.raises(UnsupportedError, match=reason):
        built(method, model, **kw)
    return None


def test_the_table_names_registered_methods_and_matrix_models() -> None:
    assert {m for m, _ in EXPECTED_UNSUPPORTED} <= set(load_methods())
    assert {m for _, m in EXPECTED_UNSUPPORTED} <= set(MODELS) <= set(BUILTIN)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("method", list(load_methods()))
def test_training_steps_lower_the_loss(method: str, model: str) -> None:
    b = _built(method, model)
    if b is None:
        return
    trainable = {id(p) for p in b.trainable}
    assert trainable == {id(p) for p in b.model.parameters() if p.requires_grad}
    if not b.plan.method.trains:
        assert not b.trainable, "a method that does not train must freeze every parameter"
        return
    assert b.trainable
    losses = losses_on_one_batch(b)
    assert losses[-1] < losses[0], f"{method} on {model}: loss {losses}"


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("method", list(load_methods()))
def test_the_meta_build_trains_what_the_real_build_trains(method: str, model: str) -> None:
    """The memory model builds the cell on the meta device (bench.build.build_meta): the method's
    own `adapt` must make the same trainable parameters there, with no memory and no weights."""
    b = _built(method, model)
    if b is None:
        return
    meta = build.build_meta(build.plan(cell(method, model), torch.device("meta")))
    assert all(p.device.type == "meta" for p in meta.model.parameters())
    assert sum(p.numel() for p in meta.trainable) == sum(p.numel() for p in b.trainable)


def _linears(model: torch.nn.Module, skip: tuple[str, ...]) -> list[torch.nn.Linear]:
    return [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and not n.endswith(skip)]


def test_full_fine_tuning_trains_everything() -> None:
    b = built("full", "tiny-llama")
    assert sum(p.numel() for p in b.trainable) == sum(p.numel() for p in b.model.parameters())


@pytest.mark.parametrize("model, head", [("tiny-llama", ()), ("tiny-bert", ("classifier",))])
def test_lora_trainable_count_is_r_times_in_plus_out(model: str, head: tuple[str, ...]) -> None:
    r = 4
    base = built("full", model).model
    skip = ("lm_head", *head)
    expected = sum(r * (m.in_features + m.out_features) for m in _linears(base, skip))
    if head:  # the new classification head trains too (peft's modules_to_save)
        expected += sum(p.numel() for n, p in base.named_parameters() if n.startswith(head))
    b = built("lora", model, options={"r": r})
    assert sum(p.numel() for p in b.trainable) == expected


@pytest.mark.parametrize("model", MODELS)
def test_prompt_tuning_trainable_count_is_tokens_times_hidden(model: str) -> None:
    b = built("prompt_tuning", model, options={"num_virtual_tokens": 5})
    expected = 5 * tiny_config(model).hidden_size
    if model == "tiny-bert":
        expected += sum(p.numel() for n, p in b.model.named_parameters()
                        if p.requires_grad and "classifier" in n)
    assert sum(p.numel() for p in b.trainable) == expected


def _prompt(b: build.Built) -> torch.Tensor:
    return b.model.prompt_encoder[b.model.active_adapter].embedding.weight


@pytest.mark.parametrize("init", ["random", "vocab", "text"])
def test_prompt_tuning_inits(init: str) -> None:
    b = built("prompt_tuning", "tiny-llama", options={"num_virtual_tokens": 4, "init": init})
    vocab = b.model.get_input_embeddings().weight
    from_vocab = all(any(torch.equal(row, v) for v in vocab) for row in _prompt(b))
    assert from_vocab == (init != "random")


def test_prompt_tuning_text_init_defaults_to_the_task_instruction() -> None:
    """init = "text" without init_text starts from the embeddings of the task's instruction."""
    b = built("prompt_tuning", "tiny-llama", options={"num_virtual_tokens": 6, "init": "text"})
    ids = b.batcher.tok.encode(b.plan.task.instruction, False)[:6]
    vocab = b.model.get_input_embeddings().weight
    assert b.plan.ctx.task_instruction == b.plan.task.instruction != ""
    assert torch.equal(_prompt(b).detach(), vocab[torch.tensor(ids)].detach())
    own = built("prompt_tuning", "tiny-llama", options={"num_virtual_tokens": 6, "init": "text",
                                                         "init_text": "great film"})
    own_ids = b.batcher.tok.encode("great film", False)[:6]
    assert torch.equal(_prompt(own).detach(), vocab[torch.tensor(own_ids)].detach())
