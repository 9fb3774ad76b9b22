"""From a cell to a model: resolve the method, check support, then load and adapt for real, or build
the same model on the meta device (no memory, no weights) for the memory model.

Shared by the worker (which measures around it), the memory model and the tests.
"""
from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from typing import Any, Callable

import torch

from bench import recipe, schema
from bench.catalog import batches, models, tasks
from bench.catalog.tokenizer import ByteTokenizer, load_tokenizer
from bench.errors import UnsupportedError
from bench.method import CellContext, Method
from bench.registry import method_class
from bench.spec import Cell, Settings


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
    batcher: batches.Batcher


@dataclass(frozen=True)
class QuantizedWeight:
    """How bitsandbytes stores one weight: "4bit" (blocksize, double quantization) or "int8"."""

    kind: str
    blocksize: int = 64
    double_quant: bool = False


@dataclass
class MetaBuilt:
    """The cell's model on the meta device, as `build` would make it."""

    plan: Plan
    model: torch.nn.Module
    trainable: list[torch.nn.Parameter]
    quantized: dict[int, QuantizedWeight]  # id(weight) -> its storage
    notes: list[str]


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
    reason = (method.unsupported_reason(info, cell.settings) or unmeasured_reason(method, cell.settings)
              or recipe.unsupported_reason(info, cell.settings, method, device.type))
    if reason:
        raise UnsupportedError(reason)
    weights_dtype, compute_dtype = dtypes(cell.settings.precision, device)
    task = tasks.load_task(cell.task)
    if task.generative and info.kind != "causal":
        raise UnsupportedError(f"task {task.name!r} is scored by generation, which needs a causal LM; {info.name} is "
                               f"an {info.kind} ({info.model_type})")
    ctx = CellContext(info, cell.settings, device, weights_dtype, compute_dtype, cell.seed,
                      task_instruction=task.instruction)
    if cell.settings.strategy == "fsdp" and method.load_kwargs(ctx).get("quantization_config") is not None:
        raise UnsupportedError("strategy 'fsdp' over bitsandbytes' quantized parameters: FSDP2's fully_shard "
                               "shards plain tensors, and Params4bit / Int8Params keep their quantization "
                               "state outside the tensor, which the all-gather would drop")
    return Plan(cell, method, hf_config, ctx, task)


def unmeasured_reason(method: Method, settings: Settings) -> str | None:
    """Why a cell would measure nothing, or None. A method that trains nothing is measured by its
    evaluation alone: without one its record holds no time and only the loading peak, and would pass
    for the cheapest method in every table."""
    if method.trains or settings.eval_examples != 0:
        return None
    return (f"method {method.name!r} trains nothing, so its evaluation is all there is to measure, and "
            "eval_examples = 0 turns it off: the record would hold no time and only the loading peak; "
            "give this row eval_examples > 0")


def build(p: Plan, phase: Callable[[str], None] = lambda name: None) -> Built:
    """Load the model with the method's load arguments, adapt it, and prepare the batcher; `phase`
    hears "load" and "adapt" as each starts (a failure record names the one that failed)."""
    cell, ctx, s = p.cell, p.ctx, p.cell.settings
    phase("load")
    seed_everything(cell.seed)
    location, extra = models.source(cell.model)
    ctx.tokenizer = load_tokenizer(location, extra)
    model = models.load_model(cell.model, p.hf_config, ctx.model, len(p.task.label_words), ctx.weights_dtype,
                              ctx.device, p.method.load_kwargs(ctx), recipe.load_kwargs(s))
    recipe.check_attention(model, s)
    phase("adapt")
    model = p.method.adapt(model, ctx)
    if s.gradient_checkpointing:
        ctx.notes["checkpointed_layers"] = recipe.apply_checkpointing(model, s.checkpoint_every)
    if getattr(model, "config", None) is not None:
        model.config.use_cache = False
    batcher = batches.Batcher(p.task, ctx.tokenizer, ctx.model.kind, s.seq_len, p.method.demonstrations(p.task, ctx))
    return Built(p, model, p.method.trainable_parameters(model), batcher)


def quantize_on_meta(model: torch.nn.Module, quantization_config: Any) -> dict[int, QuantizedWeight]:
    """Let transformers' own quantizer replace the linears it would quantize, then read them."""
    from transformers.quantizers import AutoHfQuantizer

    quantizer = AutoHfQuantizer.from_config(quantization_config, pre_quantized=False)
    quantizer.preprocess_model(model, device_map={"": "meta"})
    out: dict[int, QuantizedWeight] = {}
    for p in model.parameters():
        if hasattr(p, "compress_statistics"):  # bitsandbytes Params4bit
            out[id(p)] = QuantizedWeight("4bit", int(getattr(p, "blocksize", 64) or 64), bool(p.compress_statistics))
        elif hasattr(p, "SCB") and hasattr(p, "CB"):  # Int8Params
            out[id(p)] = QuantizedWeight("int8", 0, False)
    return out


def build_meta(p: Plan) -> MetaBuilt:
    """The model `build` would make, on the meta device: from its config in the dtype the method
    loads it in, its linears quantized as transformers' bitsandbytes quantizer replaces them before
    loading, adapted by the method's own `adapt`. `p` is planned for the meta device."""
    ctx = p.ctx
    notes: list[str] = []
    try:
        ctx.tokenizer = load_tokenizer(*models.source(p.cell.model))
    except Exception:  # noqa: BLE001 - token ids only set values (a prompt's init), not sizes
        ctx.tokenizer = ByteTokenizer()
    load = p.method.load_kwargs(ctx)
    attention = recipe.load_kwargs(p.cell.settings)
    missing = recipe.attention_missing(p.cell.settings.attn_implementation)
    if missing:  # the meta model only needs the shapes: sdpa keeps what flash kernels keep
        notes.append(f"attn_implementation {p.cell.settings.attn_implementation!r} {missing}: modelled as sdpa")
        attention = {"attn_implementation": "sdpa"}
    model = models.from_config(copy.deepcopy(p.hf_config), ctx.model, len(p.task.label_words),
                               load.get("dtype", ctx.weights_dtype), ctx.device, attention)
    quantized: dict[int, QuantizedWeight] = {}
    if load.get("quantization_config") is not None:
        try:
            quantized = quantize_on_meta(model, load["quantization_config"])
        except Exception as exc:  # noqa: BLE001 - predict the rest; say what is missing
            notes.append(f"quantization not modelled ({type(exc).__name__}: {exc}); weights counted unquantized")
    model = p.method.adapt(model, ctx)
    return MetaBuilt(p, model, p.method.trainable_parameters(model), quantized, notes)
