"""Energy over a stretch of work (the timed training steps, the evaluation after training).

On CUDA: NVML's total-energy counter of the cell's GPU (millijoules since the driver loaded; Volta
and newer), read at the start and end of the stretch; where the GPU has no such counter, its power
draw sampled every 50 ms and integrated over time. NVML's counter moves in ticks 20 to 100 ms apart,
so two reads at arbitrary instants of a one-second stretch would be off by up to 10% (and read 0 for
a short one): it is read at its ticks instead. At each end, after the device is synchronized, the
counter is polled every millisecond until it changes, and that instant and value are the end's; the
work then starts just after a tick, and up to one tick of idle power after the work is in the span.
Where no tick comes within 0.3 s, it is read at once; the record's `energy.reading` says which way
it was read, and `energy.tick_s` how far apart the ticks were. On the CPU: the Linux powercap (RAPL)
package counters, where readable (they need read access to /sys/class/powercap/*/energy_uj,
root-only on many kernels). Otherwise no figure, and the reason. Every figure says its source and what it covers:
the whole GPU, or the whole CPU packages (other processes included)."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from bench.measure.nvml import cuda_index, device_handle

POWERCAP = Path("/sys/class/powercap")
POWER_INTERVAL_S = 0.05
TICK_POLL_S = 0.001  # how often a coarse counter is polled for its next tick
TICK_WAIT_S = 0.3  # longer than NVML's slowest tick (100 ms), with room; no tick by then: read at once


@dataclass
class Span:
    joules: float | None
    seconds: float

    @property
    def mean_w(self) -> float | None:
        return self.joules / self.seconds if self.joules is not None and self.seconds > 0 else None


class Counter:
    """A monotonic joule count; `source` and `scope` go into the record. A `coarse` counter moves in
    ticks far apart (EnergyMeter reads it at its ticks); the others are read at once, as `reading` says."""

    source: str
    scope: str
    coarse = False
    reading = "read at once"

    def joules(self) -> float:
        raise NotImplementedError

    def close(self) -> None:
        pass


class NvmlEnergy(Counter):
    source = "nvml_total_energy"
    coarse = True

    def __init__(self, nvml: Any, handle: Any, name: str, device_id: str | None = None) -> None:
        self._nvml, self._handle = nvml, handle
        self.scope = f"GPU {name} ({device_id + '; ' if device_id else ''}whole device)"
        self.joules()  # raises NVMLError_NotSupported where the GPU lacks the counter

    def joules(self) -> float:
        return self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) / 1000.0


class NvmlPower(Counter):
    """Power samples (milliwatts) integrated by the trapezoid rule on a background thread."""

    source = "nvml_power_samples"
    reading = (f"power sampled every {POWER_INTERVAL_S * 1000:.0f} ms and integrated by the trapezoid rule; "
               "read at once at both ends (a last sample is taken then)")

    def __init__(self, nvml: Any, handle: Any, name: str, clock: Callable[[], float] = time.perf_counter,
                 device_id: str | None = None) -> None:
        self._nvml, self._handle, self._clock = nvml, handle, clock
        self.scope = (f"GPU {name} ({device_id + '; ' if device_id else ''}whole device; "
                      f"power sampled every {POWER_INTERVAL_S * 1000:.0f} ms)")
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
    reading = "read at once (the RAPL counters update about every millisecond)"

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
    """The best counter for this device, or None and the reason; the GPU's counter may come with a
    note too (found by index, see bench/measure/nvml.py)."""
    if device.type != "cuda":
        zones, why = rapl_zones(powercap)
        return (Rapl(zones), None) if zones else (None, why)
    try:
        import pynvml
    except ImportError:
        return None, "nvidia-ml-py (pynvml) is not installed"
    try:
        pynvml.nvmlInit()
        handle, device_id, note = device_handle(pynvml, device)
        name = torch.cuda.get_device_name(cuda_index(device))
    except Exception as exc:  # noqa: BLE001 - NVML absent or broken: no figure, and why
        return None, f"NVML unavailable: {exc}"
    try:
        return NvmlEnergy(pynvml, handle, name, device_id), note
    except Exception:  # noqa: BLE001 - no total-energy counter on this GPU: sample its power instead
        pass
    try:
        return NvmlPower(pynvml, handle, name, device_id=device_id), note
    except Exception as exc:  # noqa: BLE001
        return None, f"NVML has neither a total-energy counter nor a power reading for this GPU: {exc}"


@dataclass
class Reading:
    """One read of the meter: the instant (its clock's seconds) and the counter's joules then."""

    t: float
    joules: float | None


class EnergyMeter:
    """begin() ... end() -> Span, as often as needed; the device is synchronized at both ends so that
    the span holds the work issued inside it and nothing else. Every read goes through `mark()`: a
    coarse counter at its next tick, any other at once. `clock` and `sleep` are the tests' to fake."""

    def __init__(self, device: torch.device, counter: Counter | None, note: str | None,
                 clock: Callable[[], float] = time.perf_counter, sleep: Callable[[float], None] = time.sleep) -> None:
        self.device, self.counter, self.note = device, counter, note
        self._clock, self._sleep = clock, sleep
        self._start = Reading(0.0, None)
        self.tick_s: float | None = None  # the coarse counter's tick interval, seen when the meter opened
        self.at_ticks = bool(counter and counter.coarse)
        self.reading = counter.reading if counter else None
        if counter and self.at_ticks:
            self._find_ticks(counter)

    @classmethod
    def open(cls, device: torch.device) -> "EnergyMeter":
        counter, note = open_counter(device)
        return cls(device, counter, note)

    def describe(self) -> dict[str, Any]:
        """The record's `energy.source`, `scope`, `note`, `reading` and `tick_s`: which counter and how
        it is read, or why there is none."""
        return {"source": self.counter.source if self.counter else None,
                "scope": self.counter.scope if self.counter else None, "note": self.note,
                "reading": self.reading, "tick_s": self.tick_s}

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def mark(self) -> Reading:
        """Synchronize the device, then read: a coarse counter at its next tick (the instant it is
        seen to change, and its value then), any other at once. Begin, end and the time-to-target
        probe's reads between steps all come through here."""
        self.sync()
        if self.counter is None:
            return Reading(self._clock(), None)
        if self.at_ticks:
            first, tick = self._next_tick(self.counter)
            if tick is not None:
                return tick
            self._read_at_once(f"no tick in {TICK_WAIT_S:.1f} s")
            return first  # the plain read, taken before the wait: the counter did not move since
        return Reading(self._clock(), self.counter.joules())

    def _next_tick(self, counter: Counter) -> tuple[Reading, Reading | None]:
        """The counter now, and at its next change (None where it did not change in TICK_WAIT_S)."""
        first = Reading(self._clock(), counter.joules())
        t = first.t
        while t - first.t < TICK_WAIT_S:
            self._sleep(TICK_POLL_S)
            joules = counter.joules()
            t = self._clock()
            if joules != first.joules:
                return first, Reading(t, joules)
        return first, None

    def _find_ticks(self, counter: Counter) -> None:
        """At opening: wait for two ticks, so the record can say how far apart they are here."""
        _, one = self._next_tick(counter)
        _, two = self._next_tick(counter) if one else (None, None)
        if one is None or two is None:
            self._read_at_once(f"no tick in {TICK_WAIT_S:.1f} s when the meter opened")
            return
        self.tick_s = two.t - one.t
        self.reading = (f"counter read at its ticks at both ends (ticks ~{self.tick_s * 1000:.0f} ms apart here): "
                        "the span starts at a tick and ends at the first tick after the synchronized end, "
                        "so up to one tick of idle power after the work is in it")

    def _read_at_once(self, why: str) -> None:
        """The coarse counter read at once from now on: a span may be off by up to a tick at each end."""
        self.at_ticks = False
        self.reading = (f"read at once: the counter moves in coarse ticks, and there was {why}, so a span "
                        "may be off by up to one tick at each end")

    def begin(self) -> None:
        self._start = self.mark()

    def end(self) -> Span:
        """The span since begin(); `reading` (and describe()) says how its ends were read."""
        stop, start = self.mark(), self._start
        joules = stop.joules - start.joules if stop.joules is not None and start.joules is not None else None
        return Span(joules, stop.t - start.t)

    def close(self) -> None:
        if self.counter:
            self.counter.close()
