"""Refuse to measure on a GPU that other processes already use (their memory and kernels would
distort ours). Torch-free: NVML only. A device or a process listing NVML refuses (a driver or
permission error on one GPU) is recorded in env.json's `errors`, and the check goes on without it."""
from __future__ import annotations

import os
from typing import Any

from bench.errors import BenchError

BUSY_BYTES = 500 * 2**20  # other processes holding more than this on a device make it busy


class GpuBusy(BenchError):
    pass


def other_processes(nvml: Any = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Compute and graphics processes of other pids on every visible GPU, with their memory; and
    what NVML refused on the way (one line per device or listing)."""
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return [], []
    try:
        nvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver: no GPU to be busy
        return [], []
    # pynvml's own error (every NVML status is a subclass of it); a stand-in module without one (the
    # tests' fakes) raises what it likes, so any Exception, still never a KeyboardInterrupt
    refused = getattr(nvml, "NVMLError", Exception)
    found: list[dict[str, Any]] = []
    errors: list[str] = []
    try:
        count = nvml.nvmlDeviceGetCount()
    except refused as exc:
        return [], [f"nvmlDeviceGetCount: {type(exc).__name__}: {exc}"]
    for index in range(count):
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
        except refused as exc:
            errors.append(f"GPU {index}: nvmlDeviceGetHandleByIndex: {type(exc).__name__}: {exc}")
            continue
        procs = []
        for listing in (nvml.nvmlDeviceGetComputeRunningProcesses, nvml.nvmlDeviceGetGraphicsRunningProcesses):
            try:
                procs += list(listing(handle))
            except refused as exc:
                errors.append(f"GPU {index}: {listing.__name__}: {type(exc).__name__}: {exc}")
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
    return found, errors


def check(allow_busy: bool, nvml: Any = None) -> dict[str, Any]:
    """Raise GpuBusy naming the processes unless `allow_busy`; return what env.json records (`errors`:
    what NVML refused, whose processes then went unseen)."""
    procs, errors = other_processes(nvml)
    busy = [p for p in procs if p["used_bytes"] > BUSY_BYTES]
    if busy and not allow_busy:
        names = "; ".join(f"pid {p['pid']} ({p['name']}) holds {p['used_bytes'] / 2**20:.0f} MiB on GPU {p['gpu']}"
                          for p in busy)
        raise GpuBusy(f"the GPU is busy: {names}. Measurements would be distorted; stop them, "
                      "or pass --allow-busy-gpu to run anyway (recorded in env.json)")
    return {"allow_busy_gpu": allow_busy, "other_gpu_processes": procs, "busy_threshold_bytes": BUSY_BYTES,
            "errors": errors}
