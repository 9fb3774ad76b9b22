"""The exact byte counts of a training step's static memory: parameters, gradients, optimizer state.

Exact arithmetic on facts read off the (meta) model:
- parameters: unquantized ones numel x dtype; 4-bit ones a payload of 4 bits per value plus, per
  block of 64, a fp32 absmax (double quantization: a uint8 absmax, and per 256 blocks a fp32 one)
  and the per-tensor tables bitsandbytes keeps (16-entry code, and with double quantization a
  256-entry code and an offset); 8-bit ones 1 byte per value plus a fp32 scale per row.
- gradients: trainable numel x their dtype (a gradient has its parameter's dtype).
- optimizer: torch AdamW two moments in the parameter's dtype plus a fp32 step tensor per
  parameter tensor; bitsandbytes 32-bit state in fp32, 8-bit state one byte per moment plus a fp32
  absmax per 256 values (tensors under 4,096 values keep fp32 state) and two shared 256-entry maps;
  paged state of tensors of 1e5+ values lives in CUDA managed memory, outside torch's counters.
  In this harness bf16-mixed keeps fp32 weights and autocasts: no separate master copy exists.
- the CPU's resident set also holds a quantized load's checkpoint pages (`mapped_checkpoint_bytes`).
"""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from bench.spec import is_paged

if TYPE_CHECKING:
    import torch

    from bench.build import QuantizedWeight

SAFETENSORS_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "I8": 1, "U8": 1, "BOOL": 1}
PAGED_MIN_NUMEL = 100_000  # bitsandbytes pages only state tensors this large
BNB_8BIT_MIN_NUMEL = 4096  # smaller tensors keep 32-bit state in the 8-bit optimizers


def quantized_bytes(numel: int, rows: int, kind: str, blocksize: int = 64, double_quant: bool = False) -> int:
    """Payload plus constants of one quantized weight (bitsandbytes 0.50 layout)."""
    if kind == "int8":
        return numel + 4 * rows
    blocks = math.ceil(numel / blocksize)
    total = (numel + 1) // 2 + 16 * 4  # packed 4-bit values, the 16-entry fp32 code table
    if double_quant:  # uint8 absmax, fp32 offset, second level: fp32 absmax per 256 blocks + 256-entry code
        return total + blocks + 4 + 4 * math.ceil(blocks / 256) + 256 * 4
    return total + 4 * blocks


def tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def stored_parameter_bytes(model: torch.nn.Module, quantized: dict[int, QuantizedWeight]) -> int:
    """Bytes the model's parameters take as stored: quantized weights in their packed layout."""
    total = 0
    for p in model.parameters():  # shared (tied) parameters come once
        storage = quantized.get(id(p))
        if storage is None:
            total += tensor_bytes(p)
        else:
            total += quantized_bytes(p.numel(), p.shape[0], storage.kind, storage.blocksize, storage.double_quant)
    return total


def optimizer_bytes(trainable: Iterable[torch.Tensor], optimizer: str, device_type: str) -> tuple[int, int]:
    """(bytes in device memory, bytes in CUDA managed memory) of the optimizer state."""
    device = managed = 0
    shared_maps = False
    for p in trainable:
        numel = p.numel()
        if optimizer == "adamw":
            device += 2 * tensor_bytes(p) + 4
            continue
        eight_bit = optimizer.endswith("8bit") and numel >= BNB_8BIT_MIN_NUMEL
        moments = 2 * numel * (1 if eight_bit else 4)
        if eight_bit:
            device += 2 * 4 * math.ceil(numel / 256)
            shared_maps = True
        if is_paged(optimizer) and device_type == "cuda" and numel >= PAGED_MIN_NUMEL:
            managed += moments
        else:
            device += moments
    return device + (2 * 256 * 4 if shared_maps else 0), managed


def loss_bytes(settings: Any, vocab: int, hidden: int, stream_bytes: int, tokens: int) -> int:
    """The loss' temporaries at the start of the backward, by `loss`: the standard one keeps fp32
    log-probabilities, their gradient and the logits' gradient (12 bytes x vocab per position); the
    chunked one only one slice's worth (its logits are recomputed slice by slice in backward); Liger's
    fused one no logits at all, only the input gradient it computes in the forward."""
    if settings.loss == "chunked":
        return 12 * vocab * -(-tokens // settings.loss_chunks)
    if settings.loss == "liger":
        return stream_bytes * hidden * tokens
    return 12 * vocab * tokens


def checkpoint_dtype_bytes(location: Any) -> int | None:
    """Bytes per value of a local safetensors checkpoint (the dtype holding most of its bytes, read
    from the files' headers), or None where the location is no folder of safetensors files."""
    files = sorted(Path(str(location)).glob("*.safetensors")) if location is not None else []
    by_dtype: dict[str, int] = {}
    for path in files:
        with open(path, "rb") as fh:
            header = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))
        for name, entry in header.items():
            if name != "__metadata__":
                start, end = entry["data_offsets"]
                by_dtype[entry["dtype"]] = by_dtype.get(entry["dtype"], 0) + end - start
    if not by_dtype:
        return None
    return SAFETENSORS_BYTES.get(max(by_dtype, key=lambda k: by_dtype[k]))


def mapped_checkpoint_bytes(model: torch.nn.Module, quantized: dict[int, QuantizedWeight],
                            value_bytes: int | None) -> int:
    """What the CPU process keeps resident of the checkpoint file of a quantized load. transformers
    maps safetensors files into memory, and the quantizer reads every weight it quantizes from the
    mapping: those pages (numel x the checkpoint's bytes per value, each weight) stay resident, counted
    by the process's RSS, as long as the mapping lives, which it does while an unquantized parameter
    loaded in the file's dtype still views it. 0 where nothing is quantized or nothing views it."""
    if not quantized or value_bytes is None:
        return 0
    views = any(id(p) not in quantized and p.element_size() == value_bytes for p in model.parameters())
    return sum(p.numel() * value_bytes for p in model.parameters() if id(p) in quantized) if views else 0
