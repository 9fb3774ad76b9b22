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


@dataclass
class LoopState:
    step: int = 0  # the step in progress (0-based, warm-up included): a failure record names it
    # One slot per step, written on the device. Not a list of per-step scalars: on the CPU those
    # small long-lived allocations, interleaved with each step's large freed ones, kept the heap
    # from shrinking and added ~2% to the peak RSS of a small model.
    losses: torch.Tensor | None = None


def train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: list[dict[str, torch.Tensor]],
          settings: Settings, params: list[torch.nn.Parameter], state: LoopState, instruments: Instruments,
          autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext) -> None:
    """Warm-up steps, then timed steps. The caller resets the memory peaks just before, so the
    optimizer state's allocation counts; warm-up is excluded from time only. Losses stay on the
    device until the end (an .item() per step would synchronize and slow the GPU)."""
    model.train()
    if batches:
        state.losses = torch.empty(len(batches), dtype=torch.float32, device=batches[0]["input_ids"].device)
    timer, watch = instruments.timer, instruments.watch
    for i, batch in enumerate(batches):
        state.step = i
        timed = i >= settings.warmup_steps
        if timed:
            timer.start()
        with autocast():
            loss = model(**batch).loss
        watch.mark(i, "forward")
        loss.backward()
        watch.mark(i, "backward")
        if settings.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if timed:
            timer.stop()
        watch.mark(i, "optimizer")
        state.losses[i] = loss.detach()
        instruments.progress.update(1)
