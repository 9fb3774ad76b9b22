"""Energy over a stretch of work (the timed training steps, the evaluation after training).

On CUDA: NVML's total-energy counter of the cell's GPU (millijoules since the driver loaded; Volta
and newer), read at the start and end of the stretch; where the GPU has no such counter, its power
draw sampled every 50 ms and integrated over time. On the CPU: the Linux powercap (RAPL) package
counters, where readable (they need read access to /sys/class/powercap/*/energy_uj, root-only on
many kernels). Otherwise no figure, and the reason. Every figure says its source and what it covers:
the whole GPU, or the whole CPU packages (other processes included)."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

POWERCAP = Path("/sys/class/powercap")
POWER_INTERVAL_S = 0.05


@dataclass
class Span:
    joules: float | None
    seconds: float

    @property
    def mean_w(self) -> float | None:
        return self.joules / self.seconds if self.joules is not None and self.seconds > 0 else None


class Counter:
    """A monotonic joule count; `source` and `scope` go into the record."""

    source: str
    scope: str

    def joules(self) -> float:
        raise NotImplementedError

    def close(self) -> None:
        pass


class NvmlEnergy(Counter):
    source = "nvml_total_energy"

    def __init__(self, nvml: Any, handle: Any, name: str) -> None:
        self._nvml, self._handle, self.scope = nvml, handle, f"GPU {name} (whole device)"
        self.joules()  # raises NVMLError_NotSupported where the GPU lacks the counter

    def joules(self) -> float:
        return self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) / 1000.0


class NvmlPower(Counter):
    """Power samples (milliwatts) integrated by the trapezoid rule on a background thread."""

    source = "nvml_power_samples"

    def __init__(self, nvml: Any, handle: Any, name: str, clock: Callable[[], float] = time.perf_counter) -> None:
        self._nvml, self._handle, self._clock = nvml, handle, clock
        self.scope = f"GPU {name} (whole device; power sampled every {POWER_INTERVAL_S * 1000:.0f} ms)"
        self._lock = threading.Lock()
        self._total = 0.0
        self._last = (clock(), self._watts())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nvml-power", daemon=True)
        self._thread.start()

    def _watts(self) -> float:
        return self._nvml.nvmlDeviceGetPowerUsage(self._handle) / 1000.0

    def sample(self) -> None:
        now, watts = self._clock(), self._watts()
        with self._lock:
            t0, w0 = self._last
            self._total += (now - t0) * (w0 + watts) / 2
            self._last = (now, watts)

    def _run(self) -> None:
        while not self._stop.wait(POWER_INTERVAL_S):
            self.sample()

    def joules(self) -> float:
        self.sample()
        with self._lock:
            return self._total

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)


class Rapl(Counter):
    """The powercap package zones (intel-rapl:N, which AMD processors expose too), summed; a counter
    that wrapped since the last read adds its range."""

    source = "rapl"

    def __init__(self, zones: list[Path]) -> None:
        self._zones = zones
        self._range = [int((z / "max_energy_range_uj").read_text()) for z in zones]
        self._last = [self._read(z) for z in zones]
        self._total_uj = 0
        names = ", ".join((z / "name").read_text().strip() if (z / "name").exists() else z.name for z in zones)
        self.scope = f"CPU packages ({names}; the whole machine's, other processes included)"

    @staticmethod
    def _read(zone: Path) -> int:
        return int((zone / "energy_uj").read_text())

    def joules(self) -> float:
        for i, zone in enumerate(self._zones):
            now = self._read(zone)
            delta = now - self._last[i]
            self._total_uj += delta if delta >= 0 else delta + self._range[i]
            self._last[i] = now
        return self._total_uj / 1e6


def rapl_zones(root: Path | None = None) -> tuple[list[Path], str | None]:
    """The readable top-level RAPL zones (packages; their subzones would count twice), or why none."""
    root = root or POWERCAP
    if not root.is_dir():
        return [], f"no RAPL counters: {root} does not exist on this machine (a container or a kernel without powercap)"
    zones = sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1)
    if not zones:
        return [], f"no RAPL package zones under {root}"
    readable = []
    for zone in zones:
        try:
            int((zone / "energy_uj").read_text())
            int((zone / "max_energy_range_uj").read_text())
            readable.append(zone)
        except (OSError, ValueError):
            continue
    if not readable:
        return [], f"the RAPL counters under {root} are not readable by this user (root-only on this kernel)"
    return readable, None


def open_counter(device: torch.device, powercap: Path | None = None) -> tuple[Counter | None, str | None]:
    """The best counter for this device, or None and the reason."""
    if device.type != "cuda":
        zones, why = rapl_zones(powercap)
        return (Rapl(zones), None) if zones else (None, why)
    try:
        import pynvml
    except ImportError:
        return None, "nvidia-ml-py (pynvml) is not installed"
    try:
        pynvml.nvmlInit()
        index = device.index if device.index is not None else torch.cuda.current_device()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        name = torch.cuda.get_device_name(index)
    except Exception as exc:  # noqa: BLE001 - NVML absent or broken: no figure, and why
        return None, f"NVML unavailable: {exc}"
    try:
        return NvmlEnergy(pynvml, handle, name), None
    except Exception:  # noqa: BLE001 - no total-energy counter on this GPU: sample its power instead
        pass
    try:
        return NvmlPower(pynvml, handle, name), None
    except Exception as exc:  # noqa: BLE001
        return None, f"NVML has neither a total-energy counter nor a power reading for this GPU: {exc}"


class EnergyMeter:
    """begin() ... end() -> Span, as often as needed; the device is synchronized at both ends so that
    the span holds the work issued inside it and nothing else."""

    def __init__(self, device: torch.device, counter: Counter | None, note: str | None) -> None:
        self.device, self.counter, self.note = device, counter, note
        self._t0 = 0.0
        self._j0: float | None = None

    @classmethod
    def open(cls, device: torch.device) -> "EnergyMeter":
        counter, note = open_counter(device)
        return cls(device, counter, note)

    def describe(self) -> dict[str, str | None]:
        """The record's `energy.source`, `scope` and `note`: which counter, or why none."""
        return {"source": self.counter.source if self.counter else None,
                "scope": self.counter.scope if self.counter else None, "note": self.note}

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def read(self) -> float | None:
        """The counter's joules now (None without a counter); the caller synchronizes first."""
        return self.counter.joules() if self.counter else None

    def begin(self) -> None:
        self.sync()
        self._t0 = time.perf_counter()
        self._j0 = self.read()

    def end(self) -> Span:
        self.sync()
        seconds = time.perf_counter() - self._t0
        j = self.read()
        return Span(j - self._j0 if j is not None and self._j0 is not None else None, seconds)

    def close(self) -> None:
        if self.counter:
            self.counter.close()
