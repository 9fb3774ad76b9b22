"""One training step of bottleneck adapters against LoRA at a similar trainable-parameter count,
on tiny-llama on the CPU. Run with `pytest tests/perf --benchmark-only`; no timing is asserted."""
from __future__ import annotations

import pytest
import torch

from bench import build
from bench.config import Cell, MethodSpec, ModelSpec, Settings, TaskSpec

MODEL = "tiny-llama"
ADAPTER_M = 8


def built(method: str, options: dict) -> build.Built:
    s = Settings(batch_size=4, seq_len=64, steps=1, warmup_steps=0, eval_examples=0)
    cell = Cell(ModelSpec(MODEL), MethodSpec(method, method, options), TaskSpec("synthetic", {}), s, 0)
    return build.build(build.plan(cell, torch.device("cpu")))


def count(b: build.Built) -> int:
    return sum(p.numel() for p in b.trainable)


def lora_rank_like(target: int) -> int:
    """The LoRA rank whose trainable count is nearest `target` (the count is linear in the rank)."""
    per_rank = count(built("lora", {"r": 1, "dropout": 0.0}))
    return max(1, round(target / per_rank))


@pytest.mark.parametrize("method", ["houlsby", "pfeiffer", "lora"])
def test_training_step(benchmark, method: str) -> None:
    torch.set_num_threads(2)
    if method == "lora":
        r = lora_rank_like(count(built("houlsby", {"m": ADAPTER_M})))
        b = built("lora", {"r": r, "alpha": 2.0 * r, "dropout": 0.0})
    else:
        b = built(method, {"m": ADAPTER_M})
    batch = next(b.batcher.train_batches(4, 1, 0, torch.device("cpu")))
    opt = torch.optim.AdamW(b.trainable, lr=1e-3)
    b.model.train()

    def step() -> None:
        loss = b.model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # optimizer state allocated outside the timing
    benchmark.extra_info["trainable_params"] = count(b)
    benchmark(step)
