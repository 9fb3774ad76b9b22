"""The speed and memory recipe axes (bench/recipe.py, settings in bench/spec.py): validated like any
setting, unsupported combinations known before loading, and each technique computing what the plain
path computes (same loss, same gradients), so a ladder compares costs and nothing else."""
from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from bench import build, recipe, schema
from bench.catalog.batches import IGNORE, positions, real_tokens
from bench.errors import ConfigError, UnsupportedError
from bench.loop import model_loss, warm_until_steady
from bench.spec import Settings, TaskSpec
from tests.helpers import cell

VARLEN = TaskSpec("synthetic", {"words": 12, "min_words": 1})
NO_DROPOUT = {"dropout": 0.0}  # LoRA's dropout draws new masks every forward: two passes would differ


def varlen_built(method: str = "lora", model: str = "tiny-llama", options: dict[str, Any] | None = None,
                 **settings: Any) -> build.Built:
    c = dataclasses.replace(cell(method, model, options, seq_len=96, **settings), task=VARLEN)
    return build.build(build.plan(c, torch.device("cpu")))


@pytest.mark.parametrize(("key", "value", "message"), [
    ("compile", "fast", "compile = 'fast' is not valid"),
    ("attn_implementation", "flash", "attn_implementation = 'flash' is not valid"),
    ("loss", "fused", "loss = 'fused' is not valid"),
    ("padding", "dynamic", "padding = 'dynamic' is not valid"),
    ("gradient_checkpointing", 0, "gradient_checkpointing = 0: must be false, true"),
    ("gradient_checkpointing", 1.5, "gradient_checkpointing = 1.5 has the wrong type"),
    ("loss_chunks", 0, "loss_chunks = 0: must be a positive integer"),
])
def test_bad_recipe_values_name_the_field(key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        schema.build(Settings, {key: value}, "m.toml")


def test_a_choice_error_lists_the_valid_values() -> None:
    with pytest.raises(ConfigError) as err:
        schema.build(Settings, {"padding": "dynamic"}, "m.toml")
    assert "valid choices: longest, max_length, packed" in str(err.value)


def test_recipe_axes_at_their_defaults_keep_a_cells_id() -> None:
    plain = cell("lora")
    assert "padding" not in plain.identity()["settings"] and "compile" not in plain.identity()["settings"]
    packed = cell("lora", padding="packed")
    assert packed.identity()["settings"]["padding"] == "packed" and packed.cell_id != plain.cell_id
    assert cell("lora", gradient_checkpointing=1).settings.gradient_checkpointing is True  # every layer


@pytest.mark.parametrize(("method", "model", "settings", "phrase"), [
    ("lora", "tiny-bert", {"padding": "packed"}, "needs a causal LM"),
    ("prompt_tuning", "tiny-llama", {"padding": "packed"}, "only the first example would see them"),
    ("lora", "tiny-bert", {"loss": "chunked"}, "no vocabulary-sized logits"),
    ("lora", "tiny-llama", {"loss": "liger"}, "needs CUDA"),
    ("lora", "tiny-llama", {"compile": "reduce-overhead"}, "CUDA graphs"),
])
def test_unsupported_recipes_are_known_before_loading(method: str, model: str, settings: dict[str, Any],
                                                      phrase: str) -> None:
    with pytest.raises(UnsupportedError, match=phrase):
        build.plan(cell(method, model, **settings), torch.device("cpu"))


def test_an_attention_the_machine_lacks_is_unsupported_before_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers.utils

    # lacking here, whatever this machine has (a GPU box may have flash-attn)
    monkeypatch.setattr(transformers.utils, "is_flash_attn_2_available", lambda: False)
    with pytest.raises(UnsupportedError, match="attn_implementation = 'flash_attention_2': needs the flash-attn "
                                               "package \\(2.x\\) with CUDA, which is not available here"):
        build.plan(cell("lora", attn_implementation="flash_attention_2"), torch.device("cpu"))


def test_an_attention_transformers_replaced_at_load_is_unsupported_not_kept() -> None:
    b = varlen_built(attn_implementation="eager")
    b.model.config._attn_implementation = "sdpa"  # what a load that fell back would leave
    with pytest.raises(UnsupportedError, match="attn_implementation = 'eager' was asked for, but the model "
                                               "loaded with 'sdpa'"):
        recipe.check_attention(b.model, b.plan.cell.settings)


def test_eager_attention_loads_as_asked() -> None:
    b = varlen_built(attn_implementation="eager")
    assert b.model.config._attn_implementation == "eager"


def test_longest_and_packed_batches() -> None:
    b = varlen_built()
    fixed = next(b.batcher.train_batches(4, 1, 0, torch.device("cpu")))
    longest = next(b.batcher.train_batches(4, 1, 0, torch.device("cpu"), "longest"))
    packed = next(b.batcher.train_batches(4, 1, 0, torch.device("cpu"), "packed"))
    lengths = fixed["attention_mask"].sum(1).tolist()
    assert fixed["input_ids"].shape == (4, 96) and len(set(lengths)) > 1  # rows of different lengths
    assert longest["input_ids"].shape == (4, max(lengths))
    assert packed["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in packed
    starts = [0] + list(torch.cumsum(torch.tensor(lengths), 0)[:-1])
    assert all(packed["position_ids"][0, s] == 0 for s in starts)
    assert all(packed["labels"][0, s] == IGNORE for s in starts)  # no loss across an example boundary
    assert real_tokens(fixed) == real_tokens(longest) == real_tokens(packed) == sum(lengths)
    assert positions(packed) == sum(lengths) < positions(fixed)


def _loss_and_grads(b: build.Built, batch: dict[str, torch.Tensor], loss_fn: Any) -> tuple[float, list[torch.Tensor]]:
    for p in b.trainable:
        p.grad = None
    loss = loss_fn(b.model, batch)
    loss.backward()
    grads = [p.grad.detach().clone() for p in b.trainable]
    loss = loss.detach()
    for p in b.trainable:
        p.grad = None
    return float(loss), grads


def _same(a: tuple[float, list[torch.Tensor]], b: tuple[float, list[torch.Tensor]], tol: float = 1e-4) -> None:
    assert a[0] == pytest.approx(b[0], rel=tol, abs=tol)
    for x, y in zip(a[1], b[1]):
        torch.testing.assert_close(x, y, rtol=tol * 10, atol=tol)


def test_packed_rows_train_as_the_padded_batch() -> None:
    """Same examples packed into one row: the same loss and gradients, so the position ids keep the
    examples apart; the same row without them attends across examples and both change."""
    b = varlen_built(options=NO_DROPOUT)
    b.model.train()
    fixed = next(b.batcher.train_batches(4, 1, 0, torch.device("cpu")))
    packed = next(b.batcher.train_batches(4, 1, 0, torch.device("cpu"), "packed"))
    padded = _loss_and_grads(b, fixed, model_loss)
    _same(padded, _loss_and_grads(b, packed, model_loss))
    mixed = _loss_and_grads(b, {k: v for k, v in packed.items() if k != "position_ids"}, model_loss)
    with pytest.raises(AssertionError):
        _same(padded, mixed)


@pytest.mark.parametrize("method", ["lora", "full", "prompt_tuning"])
def test_chunked_cross_entropy_equals_the_models_own(method: str) -> None:
    b = varlen_built(method, options=NO_DROPOUT if method == "lora" else None)
    b.model.train()
    batch = next(b.batcher.train_batches(4, 1, 0, torch.device("cpu")))
    plain = _loss_and_grads(b, batch, model_loss)
    loss, restore = recipe.step_loss(b.model, dataclasses.replace(b.plan.cell.settings, loss="chunked",
                                                                  loss_chunks=3))
    try:
        chunked = _loss_and_grads(b, batch, loss)
    finally:
        restore()
    _same(plain, chunked)
    assert isinstance(recipe.head_owner(b.model).lm_head, torch.nn.Linear)  # put back for evaluation


def test_checkpointing_every_kth_layer_changes_memory_not_results() -> None:
    plain = varlen_built(options=NO_DROPOUT)
    every2 = varlen_built(options=NO_DROPOUT, gradient_checkpointing=2)
    layers = [m for m in every2.model.modules() if recipe._is_layer(m)]
    assert every2.plan.ctx.notes["checkpointed_layers"] == (len(layers) + 1) // 2 >= 1
    assert [m.gradient_checkpointing for m in layers][:2] == [True, False]
    plain.model.load_state_dict(every2.model.state_dict())
    batch = next(plain.batcher.train_batches(4, 1, 0, torch.device("cpu")))
    plain.model.train()
    every2.model.train()
    _same(_loss_and_grads(plain, batch, model_loss), _loss_and_grads(every2, batch, model_loss))


def test_offloaded_activations_go_through_save_on_cpu_and_give_the_same_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the CPU offloading moves nothing (the activations are there already), so what is checked is
    that every tensor autograd saves goes through torch's save_on_cpu hooks (counted against the
    saves of the plain forward), and the step computes what the plain one does."""
    b = varlen_built(options=NO_DROPOUT)
    b.model.train()
    batch = next(b.batcher.train_batches(4, 1, 0, torch.device("cpu")))
    saves = [0]

    def count(t: torch.Tensor) -> torch.Tensor:
        saves[0] += 1
        return t

    with torch.autograd.graph.saved_tensors_hooks(count, lambda t: t):
        plain = _loss_and_grads(b, batch, model_loss)
    offloaded = [0]

    class Counted(torch.autograd.graph.save_on_cpu):
        def __init__(self, pin_memory: bool = False, device_type: str = "cuda") -> None:
            super().__init__(pin_memory, device_type)
            pack = self.pack_hook

            def counted(t: torch.Tensor) -> Any:
                offloaded[0] += 1
                return pack(t)

            self.pack_hook = counted

    monkeypatch.setattr(torch.autograd.graph, "save_on_cpu", Counted)
    offload = recipe.forward_context(dataclasses.replace(b.plan.cell.settings, activation_offload=True),
                                     lambda: torch.autocast("cpu", enabled=False), torch.device("cpu"))

    def through_offload(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with offload():
            return model_loss(model, batch)

    _same(plain, _loss_and_grads(b, batch, through_offload))
    assert offloaded[0] == saves[0] > 0


def test_warm_up_stops_once_two_steps_agree() -> None:
    times = iter([30.0, 31.0, 5.0, 1.0, 1.05, 9.0, 9.0])
    clock_now = [0.0]

    def clock() -> float:
        return clock_now[0]

    class FakeStep:
        model = torch.nn.Linear(1, 1)

        def __call__(self, batch: Any, i: int, watch: Any) -> None:
            clock_now[0] += next(times)

    # two slow compiling steps that agree are not steady: the steps must be near the fastest one
    assert warm_until_steady(FakeStep(), [{}], clock) == pytest.approx([30.0, 31.0, 5.0, 1.0, 1.05])  # type: ignore[arg-type]


def test_a_compiled_model_computes_the_eager_step() -> None:
    """torch.compile through inductor on this CPU: the compiled LoRA model's loss and gradients on a
    packed (dynamic-shape) batch, with the chunked loss, are the eager model's."""
    b = varlen_built(options=NO_DROPOUT, padding="packed", loss="chunked")
    b.model.train()
    batch = next(b.batcher.train_batches(4, 1, 0, torch.device("cpu"), "packed"))
    loss, restore = recipe.step_loss(b.model, b.plan.cell.settings)
    try:
        eager = _loss_and_grads(b, batch, loss)
        fast = recipe.compiled(b.model, dataclasses.replace(b.plan.cell.settings, compile="default"))
        assert fast is not b.model
        _same(eager, _loss_and_grads(b, batch, lambda _, x: loss(fast, x)), tol=1e-3)
    finally:
        restore()


def test_a_compiled_cell_records_its_compile_time_apart_from_its_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """No compilation starts inside a timed step: torch's own compile callbacks (every frame dynamo
    compiles, and a backward compiled lazily at its first run) are watched against the step timer."""
    import torch._dynamo

    from bench.exec.worker import run_cell
    from bench.scenarios import training

    timing, compiles = [False], []

    class Watched(training.StepTimer):
        def start(self) -> None:
            timing[0] = True
            super().start()

        def stop(self) -> None:
            super().stop()
            timing[0] = False

    def started(*args: Any) -> None:  # the callback's argument (what triggered it) is newer than some torch
        compiles.append(timing[0])

    monkeypatch.setattr(training, "StepTimer", Watched)
    torch._dynamo.callback_handler.register_start_callback(started)
    c = dataclasses.replace(cell("lora", options=NO_DROPOUT, seq_len=64, steps=3, warmup_steps=1,
                                 compile="default", eval_examples=8, eval_batch_size=8), task=VARLEN)
    try:
        rec = run_cell(c)
    finally:
        torch._dynamo.callback_handler.remove_start_callback(started)
    assert rec.status == "ok", rec.error
    t = rec.time
    assert compiles and not any(compiles), compiles  # compiled, in the warm-up and never in a timed step
    assert 3 <= t.compile_warmup_steps <= 12 and t.compile_s >= 0
    assert len(t.step_s) == 3
    assert len(rec.quality.train_loss) == 4  # warm-up + timed: the compile warm-up steps are apart
    # its memory too: kept out of the training peak (CUDA records its own peak allocated apart)
    m = rec.memory
    assert m.compile_warmup_peak_allocated_bytes is None and m.peak_allocated_bytes is None  # the CPU
    assert any(n.startswith(f"the compile warm-up ({t.compile_warmup_steps} steps) is kept out") for n in m.notes)
    assert m.breakdown.optimizer_bytes == rec.optimizer.state_bytes_device > 0
