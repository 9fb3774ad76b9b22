"""Optimizers by name, and where their state lives (device memory or CUDA managed memory).

Whether a paged optimizer paged anything is known only once its state exists (bitsandbytes
allocates it lazily, in the first step, and pages only the state of large parameters):
`paging` says so from the state measured after training."""
from __future__ import annotations

from typing import Any

import torch

from bench.errors import UnsupportedError
from bench.predict.static import PAGED_MIN_NUMEL
from bench.spec import Settings, is_paged


def build_optimizer(params: list[torch.nn.Parameter], settings: Settings,
                    device: torch.device) -> tuple[torch.optim.Optimizer, dict[str, Any]]:
    """The optimizer named by `settings.optimizer`, and what the record says about it."""
    name, lr, wd = settings.optimizer, settings.lr, settings.weight_decay
    info: dict[str, Any] = {"name": name}  # where its state lives is said after training (`paging`)
    if name == "adamw":
        # fused is what practitioners run on CUDA; on the CPU torch's default (foreach) applies
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, fused=device.type == "cuda"), info
    try:
        import bitsandbytes as bnb
    except ImportError as exc:
        raise UnsupportedError(f"optimizer {name!r} needs bitsandbytes, which is not importable: {exc}") from None
    cls = {"adamw8bit": bnb.optim.AdamW8bit, "paged_adamw": bnb.optim.PagedAdamW,
           "paged_adamw8bit": bnb.optim.PagedAdamW8bit}[name]
    return cls(params, lr=lr, weight_decay=wd), info


def paging(name: str, device_type: str, managed_bytes: int, params: list[torch.Tensor]) -> dict[str, Any]:
    """The record's `paged_active` and `paged_note`, from the bytes of state measured in CUDA managed
    memory and the trainable parameters (bitsandbytes pages the state of those of at least
    PAGED_MIN_NUMEL elements only)."""
    active = device_type == "cuda" and managed_bytes > 0
    if not is_paged(name):
        return {"paged_active": active, "paged_note": None}
    if device_type != "cuda":
        note = ("not paged: bitsandbytes falls back to ordinary (non-paged) state on the CPU; "
                "this row measures the non-paged optimizer")
    elif active:
        note = (f"{managed_bytes} bytes of state in CUDA managed memory (paged): torch's counters do not see them, "
                "NVML's device figure does")
    else:
        largest = max((p.numel() for p in params), default=0)
        note = (f"no state was paged: bitsandbytes pages the state of parameters of at least {PAGED_MIN_NUMEL} "
                f"elements only, and the largest trainable parameter has {largest}; the state is in device memory, "
                "as a non-paged optimizer's")
    return {"paged_active": active, "paged_note": note}


def state_bytes(opt: torch.optim.Optimizer) -> dict[str, Any]:
    """Bytes of optimizer state by location; paged (managed) tensors are flagged by bitsandbytes."""
    device = managed = 0
    seen: set[int] = set()
    for state in opt.state.values():
        for value in state.values():
            if not isinstance(value, torch.Tensor):
                continue
            if hasattr(value, "to_local"):  # a rank's shard of FSDP state
                value = value.to_local()
            ptr = value.untyped_storage().data_ptr()
            if ptr in seen and ptr != 0:
                continue
            seen.add(ptr)
            size = value.untyped_storage().nbytes()
            if getattr(value, "is_paged", False):
                managed += size
            else:
                device += size
    return {"state_bytes_device": device, "state_bytes_managed": managed}
