"""The one training loop. Every method runs through it; none has a copy of its own."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

import torch

from bench.config import Settings
from bench.trackers.breakdown import PeakWatch
from bench.trackers.memory import MemoryTracker
from bench.trackers.timing import StepTimer


@dataclass
class LoopState:
    step: int = 0  # the step in progress (0-based, warm-up included): an OOM record names it
    # One slot per step, written on the device. Not a list of per-step scalars: on the CPU those
    # small long-lived allocations, interleaved with each step's large freed ones, kept the heap
    # from shrinking and added ~2% to the peak RSS of a small model.
    losses: torch.Tensor | None = None


def fault_hook() -> Callable[[int], None] | None:
    """Fault injection for the harness's own tests: BENCH_FAULT=KIND[@STEP] (KIND: error, oom, hang, exit).

    The runner sets it for the cells the user's BENCH_FAULT_CELLS glob matches; nothing else reads it.
    """
    spec = os.environ.get("BENCH_FAULT")
    if not spec:
        return None
    kind, _, at = spec.partition("@")
    at_step = int(at or 0)

    def hook(step: int) -> None:
        if step != at_step:
            return
        if kind == "error":
            raise RuntimeError(f"injected fault at step {step}")
        if kind == "oom":
            raise torch.OutOfMemoryError(f"injected out-of-memory at step {step}")
        if kind == "hang":
            import time
            time.sleep(10**6)
        if kind == "exit":
            os._exit(3)
    return hook


def train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: list[dict[str, torch.Tensor]],
          settings: Settings, params: list[torch.nn.Parameter], memory: MemoryTracker, timer: StepTimer,
          state: LoopState, autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext,
          on_step: Callable[[int], None] | None = None, progress: Any = None) -> PeakWatch | None:
    """Warm-up steps, then timed steps. Peaks are reset before the first step, so optimizer-state
    allocation counts; warm-up is excluded from time only. Losses stay on the device until the end
    (an .item() per step would synchronize and slow the GPU). Returns the CUDA peak watch (where the
    allocator peak was reached), None on the CPU."""
    model.train()
    if batches:
        state.losses = torch.empty(len(batches), dtype=torch.float32, device=batches[0]["input_ids"].device)
    memory.reset()
    watch = PeakWatch(memory.device) if memory.cuda else None
    for i, batch in enumerate(batches):
        state.step = i
        timed = i >= settings.warmup_steps
        if on_step is not None:
            on_step(i)
        if timed:
            timer.start()
        with autocast():
            loss = model(**batch).loss
        if watch is not None:
            watch.mark(i, "forward")
        loss.backward()
        if watch is not None:
            watch.mark(i, "backward")
        if settings.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if timed:
            timer.stop()
        if watch is not None:
            watch.mark(i, "optimizer")
        state.losses[i] = loss.detach()
        if progress is not None:
            progress.update(1)
    return watch
