"""Small builders shared by the tests: the one cell builder, the one build helper, the one
loss-on-one-batch helper, and the tiny built-ins' dimensions as the catalog defines them."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from bench.spec import Cell, MethodSpec, ModelSpec, Settings, TaskSpec

if TYPE_CHECKING:
    import torch

    from bench import build

# The head of a matrix file for runner tests: one tiny model, tiny settings; append [[methods]].
TINY_MATRIX = """
name = "t"
models = ["tiny-llama"]
tasks = ["synthetic"]
[defaults]
batch_size = 2
seq_len = 32
steps = 2
warmup_steps = 1
eval_examples = 4
threads = 1
timeout_s = {timeout}
"""
FULL_AND_LORA = """
[[methods]]
method = "full"
[[methods]]
method = "lora"
options = { r = 2 }
"""


def tiny_matrix(methods: str = FULL_AND_LORA, timeout: float = 120) -> str:
    return TINY_MATRIX.format(timeout=timeout) + methods


# The (method, model) pairs of tiny built-ins that cannot run, each with a phrase its
# UnsupportedError must contain. The shared method matrix (tests/methods/test_matrix.py) fails on any
# other unsupported pair, and on a listed pair that runs.
def bert_takes_past_key_values() -> bool:
    """peft hands the prefixes to the model as `past_key_values`. BERT's forward takes that argument
    up to transformers 5.17 (the GPU image's) and calls it `cache` in the lock's 5.24: the prefix
    tuning method decides by trying a forward, and the tests read the signature to know the answer."""
    import inspect

    from transformers.models.bert.modeling_bert import BertModel

    return "past_key_values" in inspect.signature(BertModel.forward).parameters


EXPECTED_UNSUPPORTED = {
    # in-context learning scores label words with a causal LM; an encoder's head needs training
    ("icl", "tiny-bert"): "causal LM",
}
if not bert_takes_past_key_values():  # decided by trying a forward (methods/prefix_tuning.py)
    EXPECTED_UNSUPPORTED[("prefix_tuning", "tiny-bert")] = "does not take in transformers"

TINY = Settings(batch_size=4, seq_len=32, steps=3, warmup_steps=1, lr=1e-3, eval_examples=16, threads=2,
                timeout_s=120)


def cell(method: str, model: str = "tiny-llama", options: dict[str, Any] | None = None, task: str = "synthetic",
         seed: int = 0, **settings: Any) -> Cell:
    """A cell with TINY settings (overridden by `settings`) and the method's default options
    completed from its Config dataclass, as a matrix file would resolve them."""
    from bench import schema
    from bench.registry import method_class

    cls = method_class(method)
    resolved = dataclasses.asdict(schema.build(cls.Config, options or {}, method))
    return Cell(ModelSpec(model), MethodSpec(method, method, resolved), TaskSpec(task, {}),
                dataclasses.replace(TINY, **settings), seed)


def built(method: str, model: str = "tiny-llama", options: dict[str, Any] | None = None,
          **settings: Any) -> build.Built:
    """`cell(...)` planned and built on the CPU (loaded and adapted; nothing trained)."""
    import torch

    from bench import build

    return build.build(build.plan(cell(method, model, options, **settings), torch.device("cpu")))


def first_batch(b: build.Built) -> dict[str, torch.Tensor]:
    """The first training batch of a built cell (4 rows, seed 0), on its device."""
    return next(b.batcher.train_batches(4, 1, 0, b.plan.ctx.device))


def losses_on_one_batch(b: build.Built, steps: int = 6, lr: float | None = 1e-2) -> list[float]:
    """The loss on one fixed batch before the first and after each of `steps` optimizer steps.

    The optimizer is the cell's own (`settings.optimizer`, weight decay and all: a paged or 8-bit
    one for the rows that name it) at `lr` (None: the cell's lr). Dropout is off, so the losses
    compare."""
    from bench.optim import build_optimizer

    settings = b.plan.cell.settings if lr is None else dataclasses.replace(b.plan.cell.settings, lr=lr)
    opt, _ = build_optimizer(b.trainable, settings, b.plan.ctx.device)
    batch = first_batch(b)
    b.model.eval()
    losses = []
    for i in range(steps + 1):
        loss = b.model(**batch).loss
        losses.append(float(loss.detach()))
        if i < steps:
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    return losses


def tiny_config(model: str) -> Any:
    """The transformers config of a built-in model, made from `bench.catalog.models.BUILTIN[model]`:
    tests read dimensions (hidden_size, num_hidden_layers, num_attention_heads, vocab_size, ...)
    from here rather than repeating the numbers."""
    from bench.catalog import models

    return models.load_config(ModelSpec(model))


class FakeClock:
    """One clock for a cell's energy meter, its counter (joules = watts x this clock) and the
    training's wall time (`fake_clock` installs it): it moves only by `step_s` per training step
    and `eval_s` per evaluation, so every reading of it is exact and none depends on the machine."""

    def __init__(self, step_s: float, eval_s: float, watts: float) -> None:
        self.now, self.step_s, self.eval_s, self.watts = 0.0, step_s, eval_s, watts

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:  # the meter's polling of a coarse counter
        self.now += seconds


def fake_clock(monkeypatch: Any, step_s: float = 0.25, eval_s: float = 1.0, watts: float = 10.0) -> FakeClock:
    """Run cells in this process on one FakeClock: every energy meter reads it, with a counter of
    `watts` on it; the training's wall time reads it; each training step (warm-up included) and each
    evaluation after loading (the test split's, the validation split's, the time-to-target probe's)
    advances it."""
    from bench import loop
    from bench.measure import energy
    from bench.scenarios import evaluation, target, training

    clock = FakeClock(step_s, eval_s, watts)

    class Watts(energy.Counter):
        source, scope = "fake", "the test's"

        def joules(self) -> float:
            return clock.watts * clock()

    def meter(cls: type, device: Any) -> Any:
        return cls(device, Watts(), None, clock=clock, sleep=clock.sleep)

    def advancing(real: Any, seconds: float) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            out = real(*args, **kwargs)
            clock.now += seconds
            return out
        return call

    monkeypatch.setattr(energy.EnergyMeter, "open", classmethod(meter))
    monkeypatch.setattr(loop.Step, "__call__", advancing(loop.Step.__call__, step_s))
    for module in (evaluation, target):
        monkeypatch.setattr(module, "evaluate", advancing(module.evaluate, eval_s))
    monkeypatch.setattr(training, "_clock", lambda device: clock())
    return clock


def saved_storages(model: Any, batch: dict[str, Any], keep_out: Any = (), autocast: Any = None) -> dict[int, int]:
    """The distinct storages autograd keeps for the backward of one forward of `model` on `batch`
    (under `autocast`), as data pointer -> bytes, leaving out the parameters' and those of the
    tensors in `keep_out`: a count of what the forward saves, independent of any allocator."""
    import contextlib

    import torch

    before = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *keep_out]}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in before:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), (autocast or contextlib.nullcontext)():
        model(**batch).loss
    return seen
