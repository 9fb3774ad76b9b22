"""Record blocks for what a result cost beyond memory and step time: the energy of the timed steps
and of evaluation (bench/measure/energy.py), and the time to a target accuracy
(bench/scenarios/target.py). Torch-free."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.results.block import Block


@dataclass
class Energy(Block):
    """Joules of the timed training steps and of the evaluation after training (bench/measure/energy.py)."""

    train_j: float | None = None  # the timed steps (warm-up excluded), device synchronized at both ends
    train_s: float | None = None  # the wall time those joules were counted over
    train_j_per_step: float | None = None
    train_j_per_1k_tokens: float | None = None  # per 1,000 real (non-padding) tokens
    train_mean_w: float | None = None
    eval_j: float | None = None
    eval_mean_w: float | None = None
    source: str | None = None  # nvml_total_energy | nvml_power_samples | rapl
    scope: str | None = None  # what the counter covers (the whole GPU, the CPU packages; a multi-rank cell's sum)
    note: str | None = None  # why there is no figure (or a caveat about it)
    reading: str | None = None  # how the counter was read: at NVML's ticks, or at once (and why)
    tick_s: float | None = None  # seconds between the NVML counter's ticks, seen when the meter opened


@dataclass
class Target(Block):
    """Time to a target accuracy on the validation split (settings target_*): where it was first
    reached, counted from the first training step (warm-up included; evaluations and compilation
    excluded), and every evaluation on the way."""

    metric: str | None = None  # "accuracy"
    value: float | None = None
    every: int | None = None  # steps between evaluations
    examples: int | None = None  # validation examples scored each time
    reached: bool | None = None
    step: int | None = None  # 1-based: the step after which the evaluation reached it
    train_s: float | None = None
    tokens: int | None = None  # real (non-padding) tokens trained on by then
    joules: float | None = None  # energy by then (null where not measured: energy.note says why)
    curve: list[dict[str, Any]] | None = None  # {step, train_s, tokens, joules, accuracy} per evaluation
    note: str | None = None  # "not reached in N steps", or why there is no curve
