"""The cell's GPU in NVML, found one way for every instrument (memory sampler, energy counter).

NVML numbers the machine's GPUs itself and ignores CUDA_VISIBLE_DEVICES: under a slot's
CUDA_VISIBLE_DEVICES or --gpus, torch's cuda:0 may be the machine's GPU 3, and NVML's index 0 another
GPU. Both agree on a GPU's UUID, so the handle is found by it; by torch's index only where torch
reports no UUID, and then a note says so (the figures may belong to another GPU)."""
from __future__ import annotations

from typing import Any

import torch


def cuda_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def device_handle(nvml: Any, device: torch.device) -> tuple[Any, str, str | None]:
    """NVML's handle of this CUDA device, its identity for the record ("GPU-<uuid>", or "NVML index
    N" without one) and a note where it was found by index, else None. The caller has called
    nvmlInit; a UUID NVML does not know raises NVML's error (no figure beats another GPU's)."""
    index = cuda_index(device)
    uuid = str(getattr(torch.cuda.get_device_properties(index), "uuid", "") or "")
    if uuid:
        # torch prints the UUID bare; NVML wants "GPU-" (a MIG instance's "MIG-..." passes as it is)
        uuid = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
        return nvml.nvmlDeviceGetHandleByUUID(uuid), uuid, None
    note = (f"NVML's device found by index {index}: torch reports no UUID for cuda:{index}, and NVML ignores "
            "CUDA_VISIBLE_DEVICES, so where that is set its figures may be another GPU's")
    return nvml.nvmlDeviceGetHandleByIndex(index), f"NVML index {index}", note
