"""The one training loop. Every method runs through it; none has a copy of its own.

The loop only trains and marks time: what it measures with is handed in as `Instruments`
(a step timer, a peak watch, a progress bar), each with a do-nothing form where there is nothing
to measure, so the loop never asks whether one is there.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Protocol

import torch

from bench.spec import Settings


class Timer(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


class Watch(Protocol):
    def mark(self, step: int, phase: str) -> None: ...


class Progress(Protocol):
    def update(self, n: int) -> None: ...


class Energy(Protocol):
    def begin(self) -> None: ...


class NoEnergy:
    def begin(self) -> None:
        pass


class Probe(Protocol):
    def after(self, step: int) -> None: ...


class NoProbe:
    def after(self, step: int) -> None:
        pass


class NoWatch:
    """Where no allocator peak can be located (the CPU)."""

    def mark(self, step: int, phase: str) -> None:
        pass


class NoProgress:
    def update(self, n: int) -> None:
        pass


@dataclass
class Instruments:
    timer: Timer
    watch: Watch = field(default_factory=NoWatch)
    progress: Progress = field(default_factory=NoProgress)
    energy: Energy = field(default_factory=NoEnergy)  # begun at the first timed step; the caller ends it
    probe: Probe = field(default_factory=NoProbe)  # after every step, outside its time (time to target)


@dataclass
class LoopState:
    step: int = 0  # the step in progress (0-based, warm-up included): a failure record names it
    # One slot per step, written on the device. Not a list of per-step scalars: on the CPU those
    # small long-lived allocations, interleaved with each step's large freed ones, kept the heap
    # from shrinking and added ~2% to the peak RSS of a small model.
    losses: torch.Tensor | None = None


StepLoss = Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor]


def model_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's own loss (transformers' cross-entropy over the labels)."""
    return model(**batch).loss


@dataclass
class Step:
    """One optimizer step, as every method takes it: the forward (in `context`: autocast, offload
    hooks) through `loss`, backward, clipping, the optimizer."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    params: list[torch.nn.Parameter]
    settings: Settings
    context: Callable[[], ContextManager[Any]] = contextlib.nullcontext
    loss: StepLoss = model_loss

    def __call__(self, batch: dict[str, torch.Tensor], i: int, watch: Watch) -> torch.Tensor:
        with self.context():
            loss = self.loss(self.model, batch)
        watch.mark(i, "forward")
        loss.backward()
        watch.mark(i, "backward")
        if self.settings.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.settings.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss


def train(step: Step, batches: list[dict[str, torch.Tensor]], state: LoopState, instruments: Instruments) -> None:
    """Warm-up steps, then timed steps. The caller resets the memory peaks just before, so the
    optimizer state's allocation counts; warm-up is excluded from time only. Losses stay on the
    device until the end (an .item() per step would synchronize and slow the GPU)."""
    step.model.train()
    if batches:
        state.losses = torch.empty(len(batches), dtype=torch.float32, device=batches[0]["input_ids"].device)
    timer, watch = instruments.timer, instruments.watch
    for i, batch in enumerate(batches):
        state.step = i
        timed = i >= step.settings.warmup_steps
        if i == step.settings.warmup_steps:
            instruments.energy.begin()
        if timed:
            timer.start()
        loss = step(batch, i, watch)
        if timed:
            timer.stop()
        watch.mark(i, "optimizer")
        state.losses[i] = loss.detach()
        instruments.probe.after(i)
        instruments.progress.update(1)


def warm_until_steady(step: Step, batches: list[dict[str, torch.Tensor]], clock: Callable[[], float],
                      tolerance: float = 0.2, least: int = 3, limit: int = 12) -> list[float]:
    """Steps on `batches` (cycled) until the last two take times within `tolerance` of the fastest
    so far (at least `least` steps, at most `limit`): a compiled model compiles, and may recompile,
    in its first steps. Returns their times."""
    step.model.train()
    times: list[float] = []
    watch = NoWatch()
    while len(times) < limit:
        t0 = clock()
        step(batches[len(times) % len(batches)], -1, watch)
        times.append(clock() - t0)
        if len(times) >= least and max(times[-2:]) <= (1 + tolerance) * min(times):
            break
    return times
