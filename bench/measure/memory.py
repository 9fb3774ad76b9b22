"""Memory: torch allocator peaks, NVML device/process peaks from a sampler thread, peak RSS.

`MemoryTracker.reset()` starts a new interval; `read()` returns the peaks since the last reset
as a flat dict of bytes (torchtune's pattern), so loading, training and evaluation are measured
apart. NVML figures are relative to a baseline taken before the model loads.

On the CPU a cell's memory is the process's peak resident set (Linux VmHWM) in the interval, above
the resident set just before the model loads: `peak_rss_above_baseline_bytes`. The interpreter,
torch and the other libraries imported before that point are not in it, nor the libraries' code
paged in since (`library_code_bytes`: kernels run for the first time, from /proc/self/smaps); the
weights, gradients, optimizer state, activations and the allocator's retained pages are. The peak is reset at the start
of each interval by writing 5 to /proc/self/clear_refs (Linux 4.0+); where that is refused, the
figure covers the process's whole life and a note says so.
"""
from __future__ import annotations

import contextlib
import os
import resource
import threading
from pathlib import Path
from typing import Any, Iterator

import torch

from bench.errors import UnsupportedError
from bench.measure.nvml import device_handle

SAMPLE_INTERVAL_S = 0.01  # 100 Hz: the issue asks for >= 50 Hz
CAP_ENV = "BENCH_MEMORY_CAP_BYTES"  # set by `bench capacity` for its probes
OUTSIDE_CAP = ("the cap binds torch's caching allocator: the CUDA context and the managed memory of "
               "paged optimizers are outside it")


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_bytes() -> int:
    """The process's resident set now (ru_maxrss, the lifetime peak, where /proc is missing)."""
    kib = _status_kib("VmRSS")
    return kib * 1024 if kib is not None else peak_rss_bytes()


def peak_rss_bytes() -> int:
    """The resident set's peak since the last `reset_peak_rss` (else since the process started)."""
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib * 1024


def library_code_bytes() -> int | None:
    """Resident bytes of the shared libraries' file mappings (their code and read-only data), from
    /proc/self/smaps; None where it cannot be read. They only grow as ops run for the first time."""
    total, library = 0, False
    try:
        with open("/proc/self/smaps") as fh:
            for line in fh:
                if line[0] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
                    name = line.rsplit(" ", 1)[-1].strip()
                    library = name.endswith(".so") or ".so." in name
                elif library and line.startswith("Rss:"):
                    total += int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return total


def reset_peak_rss() -> bool:
    """Start a new peak-RSS interval (the peak becomes the current RSS); False where refused."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class NvmlSampler:
    """Background thread sampling device-used and this process's used GPU memory. `notes` says why a
    figure may be wrong or missing (the GPU found by index, this process never listed by NVML)."""

    def __init__(self, device: torch.device, nvml: Any = None) -> None:
        if nvml is None:
            import pynvml as nvml

        self._nvml = nvml
        nvml.nvmlInit()
        self.handle, _, found_by_index = device_handle(nvml, device)
        self.pid = os.getpid()
        self.notes: list[str] = [found_by_index] if found_by_index else []
        self.query_failed = False
        self.pid_listed = False  # whether NVML ever listed this process
        self.pids_listed: set[int] = set()  # the others it listed, for the note when it never did
        self.base_device, self.base_process = self._sample()
        self.peak_device, self.peak_process = self.base_device, self.base_process
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nvml-sampler", daemon=True)
        self._thread.start()

    def _sample(self) -> tuple[int, int | None]:
        used = int(self._nvml.nvmlDeviceGetMemoryInfo(self.handle).used)
        proc = None
        try:
            for p in self._nvml.nvmlDeviceGetComputeRunningProcesses(self.handle):
                if p.pid != self.pid:
                    if len(self.pids_listed) < 8:
                        self.pids_listed.add(int(p.pid))
                    continue
                self.pid_listed = True
                if p.usedGpuMemory is not None:
                    proc = int(p.usedGpuMemory)
        except self._nvml.NVMLError as exc:
            self.query_failed = True
            self._note(f"NVML process query failed: {exc}")
        return used, proc

    def _note(self, note: str) -> None:
        if note not in self.notes:
            self.notes.append(note)

    def _unlisted_note(self) -> None:
        """Why nvml_process_peak_bytes is null where NVML answered but never named this process."""
        if self.pid_listed or self.query_failed:
            return
        others = ", ".join(map(str, sorted(self.pids_listed))) or "none"
        self._note(f"nvml_process_peak_bytes is null: NVML never listed this process (pid {self.pid}) on its GPU "
                   f"(pids it listed: {others}); in a container NVML reports the host's pids, which differ from "
                   "the container's (pid namespaces)")

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            self.sample()

    def sample(self) -> None:
        used, proc = self._sample()
        with self._lock:
            self.peak_device = max(self.peak_device, used)
            if proc is not None:
                self.peak_process = proc if self.peak_process is None else max(self.peak_process, proc)

    def reset(self) -> None:
        used, proc = self._sample()
        with self._lock:
            self.peak_device, self.peak_process = used, proc

    def read(self) -> dict[str, int | None]:
        self.sample()
        with self._lock:
            device = self.peak_device - self.base_device
            process = None if self.peak_process is None else self.peak_process - (self.base_process or 0)
        if process is None:
            self._unlisted_note()
        return {"nvml_device_peak_bytes": device, "nvml_process_peak_bytes": process,
                "nvml_device_baseline_bytes": self.base_device, "nvml_process_baseline_bytes": self.base_process}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)


# The peaks an excluded interval carries over (the baseline and derived figures are not peaks).
CARRIED = ("peak_allocated_bytes", "peak_reserved_bytes", "nvml_device_peak_bytes", "nvml_process_peak_bytes",
           "peak_rss_bytes")


class MemoryTracker:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.nvml: NvmlSampler | None = None
        self.notes: list[str] = []
        self.rss_baseline_bytes = rss_bytes()  # before the model loads: the runtime and libraries only
        # library code paged in after the baseline (kernels run for the first time) is not the cell's memory
        self.library_baseline_bytes = library_code_bytes()
        self._carried: dict[str, int] = {}  # peaks from before an excluded interval (see `excluded`)
        if self.cuda:
            try:
                self.nvml = NvmlSampler(device)
            except Exception as exc:  # noqa: BLE001 - NVML is optional: say so, measure the rest
                self.notes.append(f"NVML unavailable: {exc}")

    @contextlib.contextmanager
    def excluded(self) -> Iterator[None]:
        """An interval inside a measured one (an evaluation between training steps) kept out of its
        peaks: the peaks so far are carried, and the counters restart after it. Nothing is freed
        (the training's cached blocks stay), so torch's peak allocated leaves the interval out
        entirely; reserved, NVML and RSS peaks can still hold memory the interval left cached."""
        before = self.read()
        try:
            yield
        finally:
            if self.cuda:
                torch.cuda.synchronize(self.device)
                torch.cuda.reset_peak_memory_stats(self.device)
            if self.nvml:
                self.nvml.reset()
            reset_peak_rss()
            self._carried = {k: max(v, self._carried.get(k) or 0) for k, v in before.items()
                             if k in CARRIED and v is not None}

    def allocated_bytes(self) -> int | None:
        return torch.cuda.memory_allocated(self.device) if self.cuda else None

    def reset(self) -> None:
        self._carried = {}
        if self.cuda:
            torch.cuda.synchronize(self.device)
            # Blocks cached from freed temporaries (a random-weight model written out before a
            # quantized load, say) would otherwise count in this interval's peak reserved.
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        if self.nvml:
            self.nvml.reset()
        if not reset_peak_rss():
            note = "peak RSS could not be reset (/proc/self/clear_refs refused): RSS peaks cover the process's life"
            if note not in self.notes:
                self.notes.append(note)

    def read(self) -> dict[str, int | None]:
        """Peaks since the last reset: torch's and NVML's on CUDA, the resident set's everywhere."""
        peak_rss = peak_rss_bytes()
        out: dict[str, int | None] = {"peak_allocated_bytes": None, "peak_reserved_bytes": None,
                                      "nvml_device_peak_bytes": None, "nvml_process_peak_bytes": None,
                                      "nvml_device_baseline_bytes": None, "nvml_process_baseline_bytes": None,
                                      "peak_rss_bytes": peak_rss, "rss_baseline_bytes": self.rss_baseline_bytes,
                                      "peak_rss_above_baseline_bytes": peak_rss - self.rss_baseline_bytes}
        if self.cuda:
            torch.cuda.synchronize(self.device)
            out["peak_allocated_bytes"] = torch.cuda.max_memory_allocated(self.device)
            out["peak_reserved_bytes"] = torch.cuda.max_memory_reserved(self.device)
        if self.nvml:
            out.update(self.nvml.read())
            for note in self.nvml.notes:
                if note not in self.notes:
                    self.notes.append(note)
        for key, value in self._carried.items():
            if out.get(key) is not None:
                out[key] = max(out[key], value)
        out["peak_rss_above_baseline_bytes"] = out["peak_rss_bytes"] - self.rss_baseline_bytes
        now = library_code_bytes() if self.library_baseline_bytes is not None else None
        if now is not None:  # the growth since the baseline is left out (at most what is resident now)
            out["library_code_bytes"] = max(0, now - self.library_baseline_bytes)
            out["peak_rss_above_baseline_bytes"] -= out["library_code_bytes"]
        return out

    def close(self) -> None:
        if self.nvml:
            self.nvml.close()

    def __enter__(self) -> "MemoryTracker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def apply_cap(device: Any) -> dict[str, Any] | None:
    """In the cell: cap torch's allocator at BENCH_MEMORY_CAP_BYTES (a capacity probe), if set. CUDA only."""
    raw = os.environ.get(CAP_ENV)
    if not raw:
        return None
    if device.type != "cuda":
        raise UnsupportedError(f"{CAP_ENV} caps torch's CUDA allocator; this cell runs on the {device.type}")
    cap = int(raw)
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = min(1.0, cap / total)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    return {"cap_bytes": cap, "device_total_bytes": total, "fraction": fraction, "note": OUTSIDE_CAP}


def warm_runtime(device: Any) -> None:
    """Load what every cell's code may load, before the memory baselines are taken: the libraries
    any method or task imports (peft adds ~190 MB of resident memory, datasets ~80 MB) and the
    matmul kernels' first use. Otherwise a cell's training memory on the CPU would include the
    imports it happens to trigger after the baseline: methods would differ by their imports."""
    import importlib

    for name in ("transformers", "peft", "bitsandbytes", "datasets"):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a missing optional library is the method's business
            pass
    x = torch.ones(8, 8, device=device, requires_grad=True)
    (x @ x).sum().backward()
