"""Record blocks for memory: the training peaks and evaluation's apart (bench/measure/memory.py), the
weights' bytes (bench/measure/weights.py), the breakdown at the training peak
(bench/measure/breakdown.py) and the memory model's prediction (bench/predict). Torch-free."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.results.block import Block
from bench.results.block import block as _block


@dataclass
class Weights(Block):
    """The weights' bytes from the tensors (bench/measure/weights.py)."""

    quantized_payload_bytes: int | None = None
    quant_constants_bytes: int | None = None
    unquantized_bytes: int | None = None
    quantized_params: int | None = None


@dataclass
class Breakdown(Block):
    """Memory at the training peak by part; the parts sum to `measured_bytes` (bench/measure/breakdown.py)."""

    parameters_bytes: int | None = None
    gradients_bytes: int | None = None
    optimizer_bytes: int | None = None
    activations_bytes: int | None = None
    other_bytes: int | None = None
    optimizer_managed_bytes: int | None = None
    peak_allocated_bytes: int | None = None
    measured_bytes: int | None = None
    measured: str | None = None  # what measured_bytes is
    peak_step: int | None = None
    peak_phase: str | None = None
    forward_retained_bytes: int | None = None
    parameters_split: dict[str, int] | None = None
    note: str | None = None


@dataclass
class Predicted(Block):
    """The memory model's prediction for the cell (bench/predict)."""

    parameters_bytes: int | None = None
    gradients_bytes: int | None = None
    optimizer_bytes: int | None = None
    optimizer_managed_bytes: int | None = None
    activations_bytes: int | None = None
    other_bytes: int | None = None
    peak_bytes: int | None = None
    peak_phase: str | None = None
    trainable_params: int | None = None
    positions: int | None = None
    padded: bool | None = None
    formula: str | None = None
    notes: list[str] | None = None
    detail: dict[str, Any] | None = None
    sharding: dict[str, Any] | None = None  # a multi-rank cell: what one rank holds (bench/predict/sharding.py)


@dataclass
class Memory(Block):
    """Training memory (the training steps only), and evaluation's apart (bench/measure/memory.py)."""

    weights_bytes: int | None = None  # torch allocated after load and adaptation (CUDA)
    weights: Weights = _block(Weights)
    peak_allocated_bytes: int | None = None
    peak_reserved_bytes: int | None = None
    nvml_device_peak_bytes: int | None = None
    nvml_process_peak_bytes: int | None = None
    nvml_device_baseline_bytes: int | None = None  # what the NVML peaks are above: used before the model loaded
    nvml_process_baseline_bytes: int | None = None  # (the process's CUDA context and libraries)
    peak_rss_bytes: int | None = None
    rss_baseline_bytes: int | None = None
    peak_rss_above_baseline_bytes: int | None = None
    library_code_bytes: int | None = None  # the CPU: library code paged in since the baseline, left out of the above
    eval_peak_allocated_bytes: int | None = None
    eval_peak_rss_above_baseline_bytes: int | None = None
    compile_warmup_peak_allocated_bytes: int | None = None  # CUDA: the compile warm-up's, kept out of the training peak
    # the CPU: the glibc allocator the peak RSS figures above were taken under ("default" or
    # "release"), and where a memory pass took them, its steps and the timed steps' own figure
    cpu_allocator: str | None = None
    memory_pass_steps: int | None = None
    timed_peak_rss_above_baseline_bytes: int | None = None
    breakdown: Breakdown = _block(Breakdown)
    predicted: Predicted = _block(Predicted)
    notes: list[str] | None = None
