"""Bytes the model's weights occupy, read from the tensors themselves.

`get_memory_footprint()` is not used: it ignores the quantization state (block constants)
that bitsandbytes keeps outside the parameters. Quantized parameters are recognised by duck
typing (no bitsandbytes import, so unquantized models work without it):
- 4-bit (`Params4bit`): the parameter holds the packed 4-bit payload; `quant_state` holds the
  per-block `absmax` (fp32, or uint8 with double quantization), the 16-entry `code` table
  bitsandbytes stores with every tensor, the scalar `offset` (double quantization), and in
  `state2` the second-level fp32 `absmax` (one per 256 blocks) and its 256-entry fp32 `code`
  table (bitsandbytes 0.50 keeps a copy per tensor: ~1 KiB each, negligible on real layers).
  All of it counts as constants.
- 8-bit (`Int8Params`): the parameter (and `CB`, the same storage) is the int8 payload; `SCB`
  (one fp32 scale per row) counts as constants.
Every storage counts once, whoever refers to it (tied weights, `CB`, shared code tables).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


class _Storages:
    """Bytes of each distinct storage, counted the first time it is seen."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, int]] = set()

    def add(self, t: Any) -> int:
        if not isinstance(t, torch.Tensor):
            return 0
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        key = (str(t.device), ptr if ptr else id(storage))  # ptr 0: empty or meta; no sharing to see
        if key in self.seen:
            return 0
        self.seen.add(key)
        return storage.nbytes()


def _state_bytes(state: Any, storages: _Storages) -> int:
    """Bytes of a bitsandbytes 4-bit quant_state's tensors (second level included)."""
    total = sum(storages.add(getattr(state, attr, None)) for attr in ("absmax", "code", "offset"))
    nested = getattr(state, "state2", None)
    if getattr(state, "nested", False) and nested is not None:
        total += _state_bytes(nested, storages)
    return total


def weights_breakdown(model: nn.Module, buffers: bool = True) -> dict[str, int]:
    """Bytes of quantized payload, quantization constants and everything else (parameters, and
    buffers unless `buffers` is False), and the number of parameters the quantized tensors stand for."""
    storages = _Storages()
    payload = constants = unquantized = quantized_params = 0
    for p in model.parameters():
        state = getattr(p, "quant_state", None)
        scb = getattr(p, "SCB", None)
        if state is not None:  # 4-bit: two values per byte; the logical shape is in the state
            payload += storages.add(p)
            constants += _state_bytes(state, storages)
            quantized_params += math.prod(state.shape)
        elif isinstance(scb, torch.Tensor):  # int8: one value per byte
            payload += storages.add(p) + storages.add(getattr(p, "CB", None))
            constants += storages.add(scb)
            quantized_params += p.numel()
        else:
            unquantized += storages.add(p)
    for b in model.buffers() if buffers else ():
        unquantized += storages.add(b)
    return {"quantized_payload_bytes": payload, "quant_constants_bytes": constants,
            "unquantized_bytes": unquantized, "quantized_params": quantized_params}


def bits_per_param_of(breakdown: dict[str, int]) -> float | None:
    """Bits per quantized parameter, payload and constants together; None if nothing is quantized."""
    n = breakdown["quantized_params"]
    if not n:
        return None
    return 8 * (breakdown["quantized_payload_bytes"] + breakdown["quant_constants_bytes"]) / n


def bits_per_param(model: nn.Module) -> float | None:
    return bits_per_param_of(weights_breakdown(model))


# safetensors writes tensors in the order of its dtypes' enum, last first (then by name): the order sets
# each tensor's data offsets, and so the header's length
_SAFETENSORS_DTYPE_ORDER = ("BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "I16",
                            "U16", "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64")


def checkpoint_bytes(params: dict[str, torch.Tensor]) -> int:
    """Size of the safetensors file `params` save to, from the tensors' shapes alone (nothing is
    written or gathered, so a full fine-tuning cell spends no seconds on gigabytes of disk, and an
    FSDP rank needs no whole model in host memory): 8 bytes of header length, the JSON header padded
    with spaces to 8 bytes, then the data. A DTensor's numel is the whole tensor's."""
    import json

    from safetensors.torch import _TYPES

    if not params:
        return 0
    names = {dtype: name for name, dtype in _TYPES.items()}
    rank = {name: i for i, name in enumerate(_SAFETENSORS_DTYPE_ORDER)}
    items = sorted(params.items(), key=lambda kv: (-rank.get(names[kv[1].dtype], -1), kv[0]))
    header: dict[str, Any] = {}
    offset = 0
    for name, p in items:
        size = p.numel() * p.element_size()
        header[name] = {"dtype": names[p.dtype], "shape": list(p.shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":"))
    return 8 + len(text) + (-len(text)) % 8 + offset
