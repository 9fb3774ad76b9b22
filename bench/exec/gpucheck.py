"""Refuse to measure on a GPU that other processes already use (their memory and kernels would
distort ours). Torch-free: NVML only."""
from __future__ import annotations

import os
from typing import Any

from bench.errors import BenchError

BUSY_BYTES = 500 * 2**20  # other processes holding more than this on a device make it busy


class GpuBusy(BenchError):
    pass


def other_processes(nvml: Any = None) -> list[dict[str, Any]]:
    """Compute and graphics processes of other pids on every visible GPU, with their memory."""
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return []
    try:
        nvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver: no GPU to be busy
        return []
    found = []
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        procs = list(nvml.nvmlDeviceGetComputeRunningProcesses(handle))
        procs += list(nvml.nvmlDeviceGetGraphicsRunningProcesses(handle))
        for p in procs:
            if p.pid == os.getpid():
                continue
            used = int(p.usedGpuMemory or 0)
            try:
                name = nvml.nvmlSystemGetProcessName(p.pid)
                name = name.decode() if isinstance(name, bytes) else str(name)
            except Exception:  # noqa: BLE001 - another container's pid has no name here
                name = "?"
            found.append({"gpu": index, "pid": int(p.pid), "name": name, "used_bytes": used})
    return found


def check(allow_busy: bool, nvml: Any = None) -> dict[str, Any]:
    """Raise GpuBusy naming the processes unless `allow_busy`; return what env.json records."""
    procs = other_processes(nvml)
    busy = [p for p in procs if p["used_bytes"] > BUSY_BYTES]
    if busy and not allow_busy:
        names = "; ".join(f"pid {p['pid']} ({p['name']}) holds {p['used_bytes'] / 2**20:.0f} MiB on GPU {p['gpu']}"
                          for p in busy)
        raise GpuBusy(f"the GPU is busy: {names}. Measurements would be distorted; stop them, "
                      "or pass --allow-busy-gpu to run anyway (recorded in env.json)")
    return {"allow_busy_gpu": allow_busy, "other_gpu_processes": procs, "busy_threshold_bytes": BUSY_BYTES}
