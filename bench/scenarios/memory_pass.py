"""The memory pass: on the CPU, a few training steps before the timed ones, under glibc's `release`
allocator (set before the memory baseline is taken), whose peak resident set becomes the record's
memory figure; then the model, the optimizer and the random state go back to where they were, and
the timed steps run with freed blocks kept on the heap, as glibc's defaults keep them. So the memory
figure is what the memory model predicts, the live tensors at the step's peak (glibc's defaults
would add the freed blocks they keep, 30-70% on these cells), and the speed is the defaults' (release
maps and unmaps every block of 128 KiB and up: slower steps). One process: no second load."""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch

from bench.loop import NoWatch, Step
from bench.measure.glibc import KEEP_NOTE, keep_freed_blocks, trim_heap

if TYPE_CHECKING:
    from bench.measure.memory import MemoryTracker
    from bench.spec import Settings

NOTE = ("memory pass: the peak RSS figures and the breakdown are of {n} training steps under cpu_allocator = "
        "'release' before the timed steps (the model, optimizer and random state restored after them); "
        "timed_peak_rss_above_baseline_bytes is the timed steps' own peak")


def applies(settings: Settings, device: torch.device, trains: bool = True) -> bool:
    """Whether a cell takes its memory figure from a memory pass: a method that trains, on the CPU,
    steps asked for, and the timed steps not under "release" themselves (their peak is the figure)."""
    return (trains and device.type == "cpu" and settings.memory_pass_steps > 0
            and settings.cpu_allocator != "release")


def run(settings: Settings, memory: MemoryTracker, step: Step, batches: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """The pass over the first `memory_pass_steps` batches; returns the memory block's fields it
    measured. Whole optimizer steps (the optimizer step can be the peak) at a learning rate of 0, so
    the weights stay as they are without a copy of them in the peak; the optimizer's state and
    hyperparameters and the random state are put back after."""
    n = min(settings.memory_pass_steps, len(batches))
    opt_state, rng = copy.deepcopy(step.optimizer.state_dict()), torch.get_rng_state()
    for group in step.optimizer.param_groups:
        group["lr"] = 0.0
    step.model.train()
    trim_heap()  # pages the evaluation before training left free on the heap go back to the OS
    memory.reset()
    for i in range(n):
        step(batches[i], i, NoWatch())
    figures = memory.read()
    step.optimizer.load_state_dict(opt_state)
    torch.set_rng_state(rng)
    keep_freed_blocks()
    memory.notes.extend([NOTE.format(n=n), KEEP_NOTE])
    return {"peak_rss_bytes": figures["peak_rss_bytes"],
            "peak_rss_above_baseline_bytes": figures["peak_rss_above_baseline_bytes"],
            "library_code_bytes": figures.get("library_code_bytes"),
            "cpu_allocator": "release", "memory_pass_steps": n}
