"""Small builders shared by the tests."""
from __future__ import annotations

import dataclasses
from typing import Any

from bench.config import Cell, MethodSpec, ModelSpec, Settings, TaskSpec

# The head of a matrix file for runner tests: one tiny model, tiny settings; append [[methods]].
TINY_MATRIX = """
name = "t"
models = ["tiny-llama"]
tasks = ["synthetic"]
[defaults]
batch_size = 2
seq_len = 16
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

TINY = Settings(batch_size=4, seq_len=32, steps=3, warmup_steps=1, lr=1e-3, eval_examples=16, threads=2,
                timeout_s=120)


def cell(method: str, model: str = "tiny-llama", options: dict[str, Any] | None = None, task: str = "synthetic",
         seed: int = 0, **settings: Any) -> Cell:
    """A cell with the method's default options completed from its Config dataclass."""
    from bench import schema
    from bench.registry import method_class

    cls = method_class(method)
    resolved = dataclasses.asdict(schema.build(cls.Config, options or {}, method))
    return Cell(ModelSpec(model), MethodSpec(method, method, resolved), TaskSpec(task, {}),
                dataclasses.replace(TINY, **settings), seed)


def losses_on_one_batch(built: Any, steps: int = 6, lr: float = 1e-2) -> list[float]:
    """A few AdamW steps on one fixed batch (dropout off, so the losses compare)."""
    import torch

    model = built.model
    batch = next(built.batcher.train_batches(4, 1, 0, torch.device("cpu")))
    model.eval()
    opt = torch.optim.AdamW(built.trainable, lr=lr)
    out = []
    for _ in range(steps):
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        out.append(float(loss.detach()))
    return out
