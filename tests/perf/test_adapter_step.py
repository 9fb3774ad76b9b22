"""One training step of bottleneck adapters against LoRA at a similar trainable-parameter count,
on tiny-llama on the CPU. `./run_all.sh perf` times them; no timing is asserted."""
from __future__ import annotations

import pytest
import torch

from bench import build
from tests.helpers import cell
from tests.perf.steps import CPU_MODEL, CPU_ROUNDS, CPU_SETTINGS, CPU_WARMUP_ROUNDS, run

ADAPTER_M = 8
CPU = torch.device("cpu")


def trainable_count(method: str, options: dict) -> int:
    b = build.build(build.plan(cell(method, CPU_MODEL, options, **CPU_SETTINGS), CPU))
    return sum(p.numel() for p in b.trainable)


def lora_rank_like(target: int) -> int:
    """The LoRA rank whose trainable count is nearest `target` (the count is linear in the rank)."""
    return max(1, round(target / trainable_count("lora", {"r": 1, "dropout": 0.0})))


@pytest.mark.benchmark(group=f"adapters vs LoRA: {CPU_MODEL}, cpu")
@pytest.mark.parametrize("method", ["houlsby", "pfeiffer", "lora"])
def test_training_step(benchmark, step_case, method: str) -> None:
    if method == "lora":
        r = lora_rank_like(trainable_count("houlsby", {"m": ADAPTER_M}))
        options = {"r": r, "alpha": 2.0 * r, "dropout": 0.0}
    else:
        options = {"m": ADAPTER_M}
    run(benchmark, step_case(method, CPU_MODEL, options, device=CPU, **CPU_SETTINGS), CPU_ROUNDS, CPU_WARMUP_ROUNDS)
