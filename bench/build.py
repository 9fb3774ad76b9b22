"""From a cell to a model ready to train: resolve the method, check support, load, adapt.

Shared by the worker (which measures around it) and the tests (which check methods with it).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

import torch

from bench import models, schema, tasks
from bench.config import Cell
from bench.errors import UnsupportedError
from bench.method import CellContext, Method
from bench.registry import method_class
from bench.tokenizer import load_tokenizer


@dataclass
class Plan:
    """What is known before any weight loads."""

    cell: Cell
    method: Method
    hf_config: Any
    ctx: CellContext
    task: tasks.Task


@dataclass
class Built:
    plan: Plan
    model: torch.nn.Module
    trainable: list[torch.nn.Parameter]
    batcher: tasks.Batcher


def pick_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def dtypes(precision: str, device: torch.device) -> tuple[torch.dtype, torch.dtype]:
    """(weights dtype, compute dtype) for a precision setting."""
    if precision != "fp32" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UnsupportedError(f"precision {precision!r} needs bf16, which {torch.cuda.get_device_name(device)} lacks")
    return {"fp32": (torch.float32, torch.float32), "bf16-mixed": (torch.float32, torch.bfloat16),
            "bf16": (torch.bfloat16, torch.bfloat16)}[precision]


def seed_everything(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def plan(cell: Cell, device: torch.device | None = None) -> Plan:
    """Resolve the method and model config; raise UnsupportedError before anything loads."""
    device = device or pick_device()
    cls = method_class(cell.method.method)
    method = cls(schema.build(cls.Config, cell.method.options, f"{cell.method.name}.options"))
    hf_config = models.load_config(cell.model)
    info = models.model_info(cell.model, hf_config)
    reason = method.unsupported_reason(info, cell.settings)
    if reason:
        raise UnsupportedError(reason)
    weights_dtype, compute_dtype = dtypes(cell.settings.precision, device)
    ctx = CellContext(info, cell.settings, device, weights_dtype, compute_dtype, cell.seed)
    return Plan(cell, method, hf_config, ctx, tasks.load_task(cell.task))


def build(p: Plan, phase: Callable[[str], None] = lambda name: None) -> Built:
    """Load the model with the method's load arguments, adapt it, and prepare the batcher; `phase`
    hears "load" and "adapt" as each starts (a failure record names the one that failed)."""
    cell, ctx, s = p.cell, p.ctx, p.cell.settings
    phase("load")
    seed_everything(cell.seed)
    location, extra = models.source(cell.model)
    ctx.tokenizer = load_tokenizer(location, extra)
    model = models.load_model(cell.model, p.hf_config, ctx.model, len(p.task.label_words), ctx.weights_dtype,
                              ctx.device, p.method.load_kwargs(ctx))
    phase("adapt")
    model = p.method.adapt(model, ctx)
    if s.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if getattr(model, "config", None) is not None:
        model.config.use_cache = False
    batcher = tasks.Batcher(p.task, ctx.tokenizer, ctx.model.kind, s.seq_len, p.method.demonstrations(p.task, ctx))
    return Built(p, model, p.method.trainable_parameters(model), batcher)
