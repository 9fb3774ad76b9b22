"""Optimizers by name, and where their state lives (device memory or CUDA managed memory)."""
from __future__ import annotations

from typing import Any

import torch

from bench.errors import UnsupportedError
from bench.spec import Settings


def build_optimizer(params: list[torch.nn.Parameter], settings: Settings,
                    device: torch.device) -> tuple[torch.optim.Optimizer, dict[str, Any]]:
    """The optimizer named by `settings.optimizer`, and what the record says about it."""
    name, lr, wd = settings.optimizer, settings.lr, settings.weight_decay
    info: dict[str, Any] = {"name": name, "paged_active": False, "paged_note": None}
    if name == "adamw":
        # fused is what practitioners run on CUDA; on the CPU torch's default (foreach) applies
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, fused=device.type == "cuda"), info
    try:
        import bitsandbytes as bnb
    except ImportError as exc:
        raise UnsupportedError(f"optimizer {name!r} needs bitsandbytes, which is not importable: {exc}") from None
    cls = {"adamw8bit": bnb.optim.AdamW8bit, "paged_adamw": bnb.optim.PagedAdamW,
           "paged_adamw8bit": bnb.optim.PagedAdamW8bit}[name]
    opt = cls(params, lr=lr, weight_decay=wd)
    if name.startswith("paged"):
        if device.type != "cuda":
            info["paged_note"] = ("not paged: bitsandbytes falls back to ordinary (non-paged) state on the CPU; "
                                  "this row measures the non-paged optimizer")
        else:
            info["paged_note"] = "state in CUDA managed memory: torch's counters do not see it, NVML does"
    return opt, info


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
