"""Memory at the training peak, split into parameters, gradients, optimizer state, activations, other.

The static parts come from exact tensor accounting (each storage once; quantized parameters split
into payload and constants as in `weights.py`); activations and temporaries are what the allocator
peak leaves over. Finding the peak costs one host-side read of the allocator's counters after the
forward, the backward and the optimizer step of each step: the counters are updated when work is
enqueued, so no synchronize is needed and the GPU never waits for the read.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bench.measure.weights import weights_breakdown
from bench.parallel import local_bytes

PHASES = ("forward", "backward", "optimizer")


def _stats_reader(device: torch.device) -> Any:
    """A function returning (current, peak) allocated bytes. `torch.cuda.max_memory_allocated`
    flattens and sorts ~100 counters into a new dict on every call; the nested form torch builds
    them from is read directly where this torch has it, else the public calls."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    raw = getattr(torch._C, "_cuda_memoryStats", None)

    def nested() -> tuple[int, int]:
        stats = raw(index)["allocated_bytes"]["all"]
        return int(stats["current"]), int(stats["peak"])

    def public() -> tuple[int, int]:
        return torch.cuda.memory_allocated(index), torch.cuda.max_memory_allocated(index)

    if raw is not None:
        try:
            nested()
            return nested
        except (KeyError, TypeError, RuntimeError):
            pass
    return public


class PeakWatch:
    """Remembers at which step and phase the allocator peak last rose, and what the forward of that
    step left allocated (the saved activations and the loss' tensors). CUDA only."""

    def __init__(self, device: torch.device) -> None:
        self._read = _stats_reader(device)
        self.start_bytes, self.peak_bytes = self._read()  # after the loop's reset: the static memory
        self.step: int | None = None
        self.phase: str | None = None
        self.step_start_bytes = self.start_bytes
        self.forward_retained_bytes: int | None = None
        self._step_start = self.start_bytes
        self._after_forward = 0

    def mark(self, step: int, phase: str) -> None:
        current, peak = self._read()
        if phase == "forward":
            self._after_forward = current
        if peak > self.peak_bytes:
            self.peak_bytes, self.step, self.phase = peak, step, phase
            self.step_start_bytes = self._step_start
            self.forward_retained_bytes = self._after_forward - self._step_start
        if phase == "optimizer":  # gradients freed: what is left is where the next step starts
            self._step_start = current


def parameter_split(model: nn.Module) -> dict[str, int]:
    """Bytes of the parameters (buffers excluded: rotary tables are not parameters), each storage
    once, quantized ones split into payload and constants."""
    split = weights_breakdown(model, buffers=False)
    return {k: split[k] for k in ("quantized_payload_bytes", "quant_constants_bytes", "unquantized_bytes")}


def gradient_bytes(params: list[nn.Parameter]) -> int:
    """Bytes the gradients of `params` occupy while they exist (a gradient has its parameter's
    dtype and shape; the loop frees them after every step, so they are counted from the params)."""
    seen: set[int] = set()
    total = 0
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            total += local_bytes(p)  # a rank's shard of an FSDP parameter
    return total


def breakdown(params_split: dict[str, int], grads: int, opt_state: dict[str, int],
              watch: PeakWatch | None, cpu_measured_bytes: int | None = None,
              state_at_start: bool = False) -> dict[str, Any]:
    """The `memory.breakdown` block. On CUDA the parts sum to torch's peak allocated (`watch` says
    where it was reached). On the CPU (no watch) they sum to the measured training memory, the peak
    RSS above the pre-load baseline: parameters, gradients and optimizer state are exact, and
    `other_bytes` is the rest (activations, temporaries, the allocator's retained pages), which RSS
    cannot tell apart. `state_at_start`: the optimizer state existed when the watch started (a
    compiled cell's warm-up stepped the optimizer), so it is there from step 0 on."""
    parameters = sum(params_split.values())
    out: dict[str, Any] = {
        "parameters_bytes": parameters, "gradients_bytes": grads,
        "optimizer_bytes": opt_state["state_bytes_device"], "activations_bytes": None, "other_bytes": None,
        "optimizer_managed_bytes": opt_state["state_bytes_managed"], "peak_allocated_bytes": None,
        "measured_bytes": None, "measured": None,
        "peak_step": None, "peak_phase": None, "forward_retained_bytes": None,
        "parameters_split": params_split, "note": None,
    }
    if watch is None:
        if cpu_measured_bytes is None:
            out["note"] = "no measured peak to split; parameters, gradients and optimizer state are exact"
            return out
        out.update(measured_bytes=cpu_measured_bytes, measured="peak RSS above the pre-load baseline",
                   other_bytes=cpu_measured_bytes - parameters - grads - out["optimizer_bytes"])
        out["note"] = ("CPU: parameters, gradients and optimizer state are exact; other_bytes is the rest of the "
                       "peak RSS above the pre-load baseline (activations, temporaries, allocator pages), "
                       "which RSS cannot split")
        return out
    out["measured"] = "torch peak allocated"
    if watch.step is None:  # nothing rose above the memory at the loop's start
        out["note"] = "the peak did not rise during training; nothing to attribute to activations"
        optimizer = out["optimizer_bytes"] if state_at_start else 0
        out.update(activations_bytes=0, other_bytes=watch.start_bytes - parameters - optimizer, gradients_bytes=0,
                   optimizer_bytes=optimizer, peak_allocated_bytes=watch.start_bytes, measured_bytes=watch.start_bytes)
        return out
    # Gradients are freed after every step (zero_grad(set_to_none=True)): none exist in the forward.
    # In the backward they accumulate as it runs; they are all counted there (an upper bound: the peak
    # often comes at the start of the backward, where the loss' temporaries are largest).
    if watch.phase == "forward":
        out["gradients_bytes"] = 0
    # Optimizer state is allocated lazily in the first optimizer step (unless the warm-up took it).
    if watch.step == 0 and watch.phase != "optimizer" and not state_at_start:
        out["optimizer_bytes"] = 0
    # "Other": allocated before the first step that is not a parameter: the pre-built batches on the
    # device, buffers (rotary tables), the allocator's rounding of every block to 512 bytes.
    other = watch.start_bytes - parameters
    if watch.step > 0 or state_at_start:  # optimizer state that exists is part of each step's start
        other = watch.step_start_bytes - parameters - out["optimizer_bytes"]
    out["other_bytes"] = other
    out["activations_bytes"] = (watch.peak_bytes - parameters - out["gradients_bytes"]
                                - out["optimizer_bytes"] - other)
    out.update(peak_allocated_bytes=watch.peak_bytes, measured_bytes=watch.peak_bytes, peak_step=watch.step,
               peak_phase=watch.phase,
               forward_retained_bytes=watch.forward_retained_bytes)
    if out["optimizer_managed_bytes"]:
        out["note"] = "optimizer_managed_bytes (CUDA managed memory of a paged optimizer) is outside the peak"
    if watch.phase == "backward" and out["gradients_bytes"]:
        out["note"] = ((out["note"] + "; ") if out["note"] else "") + (
            "peak in the backward: every gradient is counted, though some may not exist yet at the peak "
            "(activations_bytes is then low by up to gradients_bytes)")
    return out
