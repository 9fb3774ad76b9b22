"""One training step of every registered method (one evaluation batch for a method that does not
train): tiny-llama on the CPU, and the Qwen2.5-0.5B shape in bf16 on CUDA (marked `gpu`).

`./run_all.sh perf` times them into reports/perf/benchmark.json; see the README for gating a change
against a saved baseline. No timing is asserted here."""
from __future__ import annotations

import pytest
import torch

from tests.perf.steps import (
    CPU_MODEL,
    CPU_ROUNDS,
    CPU_WARMUP_ROUNDS,
    GPU_MODEL,
    GPU_ROUNDS,
    GPU_SETTINGS,
    GPU_WARMUP_ROUNDS,
    METHODS,
    cpu_settings,
    run,
)


@pytest.mark.benchmark(group=f"step: {CPU_MODEL}, cpu")
@pytest.mark.parametrize("method", METHODS)
def test_step_cpu(benchmark, step_case, method: str) -> None:
    case = step_case(method, CPU_MODEL, device=torch.device("cpu"), **cpu_settings(method))
    run(benchmark, case, CPU_ROUNDS, CPU_WARMUP_ROUNDS)


@pytest.mark.gpu
@pytest.mark.benchmark(group=f"step: {GPU_MODEL}, cuda, bf16")
@pytest.mark.parametrize("method", METHODS)
def test_step_gpu(benchmark, step_case, method: str) -> None:
    case = step_case(method, GPU_MODEL, **GPU_SETTINGS)
    run(benchmark, case, GPU_ROUNDS, GPU_WARMUP_ROUNDS)
