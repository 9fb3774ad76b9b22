"""A cell made ready to measure: its device, plan and model, its memory tracker, and the record the
scenario fills. `open_session` does what every kind of cell does before and after its scenario:
load and adapt (the tracker's baselines taken first), count the weights and the demonstrations
in-context learning keeps (`quality.shots_used`), and finally the memory model's prediction, the
trainable weights' checkpoint size and the rows cut to seq_len (`rows`, also for a cell that failed).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator

import torch

from bench import build, parallel
from bench.exec.environment import cpu_name
from bench.measure.breakdown import parameter_split
from bench.measure.glibc import RELEASE_NOTE, release_freed_blocks
from bench.measure.memory import MemoryTracker, apply_cap, warm_runtime
from bench.measure.weights import bits_per_param_of, checkpoint_bytes, weights_breakdown
from bench.results.record import Record
from bench.scenarios import memory_pass
from bench.spec import Cell


@dataclass
class Session:
    cell: Cell
    rec: Record
    plan: build.Plan
    built: build.Built
    memory: MemoryTracker
    at: Callable[[str], None]  # tells the worker which phase runs (a failure record names it)
    parameter_split: dict[str, int]  # parameter bytes by storage kind, for the breakdown
    padded: bool = False  # training rows shorter than seq_len (the memory model then predicts a mask)

    @property
    def device(self) -> torch.device:
        return self.plan.ctx.device

    @property
    def model(self) -> torch.nn.Module:
        return self.built.model

    @property
    def settings(self) -> Any:
        return self.cell.settings

    def autocast(self) -> ContextManager[Any]:
        """bf16 autocast for bf16-mixed (fp32 master weights), nothing otherwise."""
        if self.settings.precision == "bf16-mixed":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def meaningless_accuracy(self) -> bool:
        """Random weights on natural text: an accuracy would mean nothing."""
        return self.plan.ctx.model.random_weights and self.plan.task.natural_text

    def accuracy_note(self) -> str | None:
        if self.settings.eval_examples == 0:
            return "evaluation off (eval_examples = 0)"
        if self.meaningless_accuracy:
            return (f"random weights: accuracy on {self.plan.task.name} would mean nothing; "
                    "this row measures memory and time")
        return None


def pick_device(rec: Record) -> torch.device:
    device = build.pick_device()
    rec.device.set(kind=device.type,
                   name=torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name())
    return device


@contextlib.contextmanager
def open_session(cell: Cell, rec: Record, at: Callable[[str], None]) -> Iterator[Session]:
    """Plan, take the memory baselines, load and adapt; after the scenario, predict and size the
    checkpoint. The tracker (and its NVML sampler thread) is closed however the block ends."""
    s = cell.settings
    if s.threads:
        torch.set_num_threads(s.threads)
    device = pick_device(rec)
    plan = build.plan(cell, device)
    rec.task_data.set(**plan.task.data)
    cap = apply_cap(device)
    if cap is not None:
        rec.memory_cap.set(**cap)
    if s.cpu_allocator == "release" or memory_pass.applies(s, device, plan.method.trains):  # before the baseline
        release_freed_blocks()
    warm_runtime(device)
    with contextlib.ExitStack() as stack:
        memory = stack.enter_context(MemoryTracker(device))  # NVML and RSS baselines before anything loads
        if s.cpu_allocator == "release":
            memory.notes.append(RELEASE_NOTE if device.type == "cpu" else
                                "cpu_allocator = 'release' changes host memory only: no GPU figure depends on it")
        built = build.build(plan, at)
        model = built.model
        rec.params.set(trainable=sum(p.numel() for p in built.trainable),
                       total=sum(p.numel() for p in model.parameters()))
        # from the tensors, before any forward: bitsandbytes may repack 4-bit weights for CPU inference
        rec.memory.weights_bytes = memory.allocated_bytes()
        weights = weights_breakdown(model)
        rec.memory.weights.set(**weights)
        rec.add_notes(plan.ctx.notes)
        bits = bits_per_param_of(weights)
        if bits is not None:
            rec.quant.bits_per_param = bits
        session = Session(cell, rec, plan, built, memory, at, parameter_split(model))
        if built.batcher.shots_asked:
            rec.quality.shots_used = len(built.batcher.demos)
        try:
            yield session
        finally:  # a cell that fails keeps the count of what it encoded
            rec.rows.set(**built.batcher.rows_cut())
        here = parallel.world()
        if here is None or here.rank == 0:  # only rank 0's record is kept: the other ranks skip its end-of-cell work
            # after every peak is read: building the meta model must not show in the process' RSS peak
            rec.memory.predicted.set(**predicted(cell, device.type, session.padded))
            at("save")
            rec.checkpoint_bytes = checkpoint_bytes({n: p for n, p in model.named_parameters() if p.requires_grad})
        if memory.notes:
            rec.memory.notes = memory.notes


def predicted(cell: Cell, device_type: str, padded: bool = False) -> dict[str, Any]:
    """The memory model's prediction for this cell, or a block saying why there is none."""
    try:
        from bench.predict import predict

        return predict(cell, device_type, padded)
    except Exception as exc:  # noqa: BLE001 - a prediction never fails the cell
        return {"peak_bytes": None, "notes": [f"no prediction: {type(exc).__name__}: {exc}"]}
