"""What the step benchmarks share: a cell is built once per test, outside the timing; the
timed function is one step of the harness's own loop (`bench.loop.train` on one batch, with the
instruments a cell trains with), or one evaluation batch for a method that does not train.

Under the project's default options (`--benchmark-disable`) every benchmark runs its step once, so
a broken benchmark fails `./run_all.sh test`; `./run_all.sh perf` times them. No timing is asserted;
what the timed calls did is: every training step took a finite loss, was timed and moved the trainable
parameters; every evaluation batch scored its examples.
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import torch

from bench import build
from bench.errors import UnsupportedError
from bench.loop import Instruments, LoopState, NoWatch, Step, train
from bench.measure.accuracy import evaluate
from bench.measure.breakdown import PeakWatch
from bench.measure.memory import MemoryTracker
from bench.measure.timing import StepTimer
from bench.optim import build_optimizer
from bench.registry import load_methods, method_class
from tests.helpers import EXPECTED_UNSUPPORTED, cell

METHODS = list(load_methods())

# Tiny random model on the CPU: seconds per method, for a quick local signal.
CPU_MODEL = "tiny-llama"
CPU_SETTINGS: dict[str, Any] = {"batch_size": 4, "seq_len": 64, "threads": 2}
# Byte tokens: four demonstrations and the question need about 160 of them (the prompt template is 19).
CPU_SEQ_LEN: dict[str, int] = {"icl": 192}


def cpu_settings(method: str) -> dict[str, Any]:
    return {**CPU_SETTINGS, "seq_len": CPU_SEQ_LEN.get(method, CPU_SETTINGS["seq_len"])}
CPU_ROUNDS, CPU_WARMUP_ROUNDS = 10, 2

# A real model shape on CUDA: what a GPU CI runner gates on.
GPU_MODEL = "qwen2.5-0.5b"
GPU_SETTINGS: dict[str, Any] = {"batch_size": 8, "seq_len": 512, "precision": "bf16", "threads": None}
GPU_ROUNDS, GPU_WARMUP_ROUNDS = 20, 3


@dataclass
class StepCase:
    """A built cell and the function a benchmark times."""

    built: build.Built
    step: Callable[[], None]
    measures: str  # "train_step" or "eval_batch"
    rows: int  # sequences per step (an evaluation batch scores every label of each example)
    check: Callable[[int], None]  # after `n` calls of `step`: what they did (asserts)

    @property
    def trainable_params(self) -> int:
        return sum(p.numel() for p in self.built.trainable)

    def extra_info(self) -> dict[str, Any]:
        p = self.built.plan
        return {"method": p.cell.method.method, "options": p.cell.method.options, "model": p.cell.model.name,
                "measures": self.measures, "trainable_params": self.trainable_params, "batch": self.rows,
                "seq_len": p.cell.settings.seq_len, "precision": p.cell.settings.precision,
                "device": p.ctx.device.type}


def _sync(device: torch.device) -> None:
    # Inside the timed function: CUDA launches return at once, and the benchmark must time the work.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_step(b: build.Built, stack: ExitStack) -> StepCase:
    s, device = b.plan.cell.settings, b.plan.ctx.device
    batch = next(b.batcher.train_batches(s.batch_size, 1, b.plan.cell.seed, device))
    opt, _ = build_optimizer(b.trainable, s, device)
    # as in a cell (bench/scenarios/training.py), so a step here costs what a step there costs:
    # the NVML sampler thread running, the allocator's peak read after every phase on CUDA
    memory = MemoryTracker(device)
    stack.callback(memory.close)
    timer = StepTimer(device)
    watch = PeakWatch(device) if memory.cuda else NoWatch()

    one = Step(b.model, opt, b.trainable, s)
    before = [p.detach().clone() for p in b.trainable]
    losses: list[float] = []

    def step() -> None:
        state = LoopState()
        train(one, [batch], state, Instruments(timer, watch))
        _sync(device)
        losses.append(float(state.losses[0]))  # after the sync: outside what a CUDA step times

    def check(calls: int) -> None:
        assert len(losses) == len(timer.step_s()) == calls >= 1  # one timed step per call
        assert all(torch.isfinite(torch.tensor(losses))), losses
        # not every tensor: LoRA's A and an adapter's down projection get no gradient while the
        # zero-initialised half after them is still zero
        assert any(not torch.equal(p.detach(), q) for p, q in zip(b.trainable, before)), \
            "the optimizer changed no trainable parameter"

    return StepCase(b, step, "train_step", s.batch_size, check)


def _eval_batch(b: build.Built) -> StepCase:
    s, device, task = b.plan.cell.settings, b.plan.ctx.device, b.plan.task
    labels = len(task.label_words)
    # evaluate() puts batch_size // labels examples in a chunk (every label scored per example):
    # exactly that many examples is one forward pass of batch_size rows.
    examples = task.test_subset(max(1, s.batch_size // labels))
    scored: list[dict[str, Any]] = []

    def step() -> None:
        scored.append(evaluate(b.model, b.batcher, examples, s.batch_size, device))
        _sync(device)

    def check(calls: int) -> None:
        assert len(scored) == calls >= 1
        for out in scored:
            assert out["eval_examples"] == len(examples) and 0 <= out["accuracy"] <= 1
            assert out["eval_loss"] > 0 and out["eval_loss"] == pytest.approx(scored[0]["eval_loss"], rel=1e-3)  # the same model

    return StepCase(b, step, "eval_batch", len(examples) * labels, check)


def make_case(stack: ExitStack, method: str, model: str, options: dict[str, Any] | None = None,
              device: torch.device | None = None, **settings: Any) -> StepCase:
    """Build the cell (skip when the method does not support it, with the reason) and its timed
    function; what must be closed goes on `stack`."""
    # a method that trains nothing is timed on one evaluation batch, which its settings must allow
    evaluates = not method_class(method).trains
    c = cell(method, model, options, steps=1, warmup_steps=0, eval_examples=1 if evaluates else 0, **settings)
    if c.settings.threads:
        torch.set_num_threads(c.settings.threads)
    try:
        b = build.build(build.plan(c, device or build.pick_device()))
    except UnsupportedError as exc:
        if (method, model) not in EXPECTED_UNSUPPORTED:  # the method matrix's table: anything else fails
            raise
        pytest.skip(f"{method} on {model}: unsupported ({exc})")
    return _train_step(b, stack) if b.plan.method.trains else _eval_batch(b)


def run(benchmark: Any, case: StepCase, rounds: int, warmup_rounds: int) -> None:
    """Time `case.step` (warm-up rounds first: optimizer state and allocator caches fill there), then
    check what the calls did (one call where benchmarks are disabled, as in the test suite)."""
    benchmark.extra_info.update(case.extra_info())
    calls = [0]

    def counted() -> None:
        calls[0] += 1
        case.step()

    benchmark.pedantic(counted, rounds=rounds, warmup_rounds=warmup_rounds)
    case.check(calls[0])
