"""Energy (bench/measure/energy.py): RAPL package counters summed and unwrapped, NVML's total-energy
counter read at its ticks (a fake NVML on a fake clock), power samples integrated where there is
none, no figure with the reason where nothing is readable; and the training scenario's `energy`
block over the timed steps and the evaluation, which says how the counter was read."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.exec.worker import run_cell
from bench.measure import energy
from tests.helpers import cell, fake_clock

CPU = torch.device("cpu")


def _zone(root: Path, name: str, label: str, uj: int, max_uj: int = 1_000_000_000) -> Path:
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "name").write_text(label + "\n")
    (zone / "energy_uj").write_text(str(uj))
    (zone / "max_energy_range_uj").write_text(str(max_uj))
    return zone


def test_rapl_sums_the_packages_not_their_subzones_and_unwraps(tmp_path: Path) -> None:
    a = _zone(tmp_path, "intel-rapl:0", "package-0", 900_000_000)
    b = _zone(tmp_path, "intel-rapl:1", "package-1", 5_000_000)
    _zone(tmp_path, "intel-rapl:0:0", "core", 1)  # a subzone of package-0: counted within it already
    counter, why = energy.open_counter(CPU, tmp_path)
    assert why is None and isinstance(counter, energy.Rapl) and counter.source == "rapl"
    assert "package-0, package-1" in counter.scope and "other processes included" in counter.scope
    start = counter.joules()
    (a / "energy_uj").write_text(str(50_000_000))  # wrapped: 100 J to the end of its 1,000 J range, 50 after
    (b / "energy_uj").write_text(str(7_000_000))  # +2 J
    assert counter.joules() - start == pytest.approx(100 + 50 + 2)


@pytest.mark.parametrize(("setup", "phrase"), [
    (lambda root: None, "does not exist on this machine"),
    (lambda root: root.mkdir(), "no RAPL package zones"),
    (lambda root: (_zone(root, "intel-rapl:0", "package-0", 1) / "energy_uj").write_text("denied"),
     "not readable by this user"),
])
def test_no_readable_counter_is_no_figure_and_the_reason(tmp_path: Path, setup, phrase: str) -> None:
    root = tmp_path / "powercap"
    setup(root)
    counter, why = energy.open_counter(CPU, root)
    assert counter is None and phrase in why


class FakeNvml:
    def __init__(self, energy_mj: int | None, power_mw: int) -> None:
        self.energy_mj, self.power_mw = energy_mj, power_mw

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: object) -> int:  # noqa: N802 - NVML's name
        if self.energy_mj is None:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return self.energy_mj

    def nvmlDeviceGetPowerUsage(self, handle: object) -> int:  # noqa: N802
        return self.power_mw


def test_nvml_total_energy_is_read_in_millijoules() -> None:
    nvml = FakeNvml(energy_mj=5_000_000, power_mw=300_000)
    counter = energy.NvmlEnergy(nvml, None, "H200")
    start = counter.joules()
    nvml.energy_mj += 12_345
    assert counter.joules() - start == pytest.approx(12.345) and "whole device" in counter.scope


class TickingNvml:
    """NVML's total-energy counter at a constant power on a fake clock (whole microseconds, so the
    arithmetic is exact): it moves only every `tick_us`, to the energy used up to that tick. `sleep`
    advances the clock, as the meter's polling does; `work` advances it as the training would."""

    def __init__(self, watts: int = 300, tick_us: int = 50_000, start_us: int = 1_234_567) -> None:
        self.watts, self.tick_us, self.us = watts, tick_us, start_us
        self.handles: list[object] = []

    def clock(self) -> float:
        return self.us / 1e6

    def sleep(self, seconds: float) -> None:
        self.us += round(seconds * 1e6)

    work = sleep

    def last_tick_us(self) -> int:
        return self.us // self.tick_us * self.tick_us

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: object) -> int:  # noqa: N802 - NVML's name
        self.handles.append(handle)
        return self.watts * self.last_tick_us() // 1000  # millijoules: W x us / 1000

    def true_joules(self, us0: int, us1: int) -> float:
        return self.watts * (us1 - us0) / 1e6


def _meter(nvml: TickingNvml) -> energy.EnergyMeter:
    """A meter on the fake's clock: its polling sleeps advance that clock, as real time would pass."""
    return energy.EnergyMeter(CPU, energy.NvmlEnergy(nvml, "gpu", "H200"), None, clock=nvml.clock, sleep=nvml.sleep)


def test_nvmls_coarse_counter_is_read_at_its_ticks_so_the_span_is_exact() -> None:
    nvml = TickingNvml()
    meter = _meter(nvml)
    assert meter.tick_s == pytest.approx(0.05) and "at its ticks" in meter.reading and "~50 ms apart" in meter.reading
    assert meter.describe()["reading"] == meter.reading and meter.describe()["tick_s"] == meter.tick_s
    nvml.sleep(0.0123)  # the meter is begun at an arbitrary instant
    meter.begin()
    begun = nvml.last_tick_us()
    assert nvml.us - begun < 1000  # the span starts at a tick (seen within a poll of it)
    nvml.work(1.0137)  # a second of work that ends between two ticks
    span = meter.end()
    ended = nvml.last_tick_us()
    assert nvml.us - ended < 1000 and ended > begun
    # the joules are exactly the energy between the two ticks, and the seconds that interval
    assert span.joules == pytest.approx(nvml.true_joules(begun, ended), rel=1e-12)
    assert span.seconds == pytest.approx((ended - begun) / 1e6, abs=1e-3)
    assert span.mean_w == pytest.approx(300, rel=2e-3)


@pytest.mark.parametrize(("work_s", "ticks"), [(1.0137, 21), (0.03, 1)])
def test_read_at_arbitrary_instants_the_counter_is_off_and_at_its_ticks_it_is_not(work_s: float,
                                                                                    ticks: int) -> None:
    """What the tick-aligned read avoids: the same work with the counter read at once at each end is
    off by up to a tick (1.00 s of ticks in 1.0137 s of work: 1.4% low; nothing at all in 30 ms)."""
    nvml = TickingNvml()
    counter = energy.NvmlEnergy(nvml, "gpu", "H200")
    t0_us, j0 = nvml.us, counter.joules()
    nvml.work(work_s)
    naive_w = (counter.joules() - j0) / ((nvml.us - t0_us) / 1e6)
    assert abs(naive_w - 300) / 300 > 0.01
    meter = _meter(nvml)
    meter.begin()
    nvml.work(work_s)
    span = meter.end()  # the work and the idle rest of its last tick: whole ticks, at 300 W
    assert span.joules == pytest.approx(ticks * 15.0) and span.mean_w == pytest.approx(300, rel=0.03)


def test_a_coarse_counter_that_never_ticks_is_read_at_once_and_the_record_says_so() -> None:
    nvml = TickingNvml(tick_us=10**12)  # never moves
    meter = _meter(nvml)
    polls = len(nvml.handles)
    assert not meter.at_ticks and meter.tick_s is None
    assert meter.reading.startswith("read at once") and "no tick in 0.3 s" in meter.reading
    assert 250 < polls < 400  # it polled about every ms for 0.3 s, then gave up
    meter.begin()
    nvml.work(1.0)
    span = meter.end()
    assert len(nvml.handles) == polls + 2  # then read at once, with no more polling
    assert span.joules == 0 and span.seconds == pytest.approx(1.0)
    assert meter.describe()["reading"] == meter.reading


def test_a_tick_that_stops_coming_later_falls_back_and_says_so() -> None:
    nvml = TickingNvml()
    meter = _meter(nvml)
    assert meter.at_ticks
    nvml.tick_us = 10**12
    first = nvml.us
    reading = meter.mark()  # the plain read, taken before the wait
    assert reading.t == pytest.approx(first / 1e6) and not meter.at_ticks and "no tick in 0.3 s" in meter.reading


def test_counters_that_do_not_tick_coarsely_are_read_at_once() -> None:
    now = [0.0]

    class Fine(energy.Counter):
        source, scope = "fake", "the test's"

        def joules(self) -> float:
            return 10.0 * now[0]

    def sleep(seconds: float) -> None:
        raise AssertionError("a fine-grained counter is never polled")

    meter = energy.EnergyMeter(CPU, Fine(), None, clock=lambda: now[0], sleep=sleep)
    meter.begin()
    now[0] = 0.5
    span = meter.end()
    assert span.joules == pytest.approx(5.0) and span.seconds == pytest.approx(0.5)
    assert meter.describe() == {"source": "fake", "scope": "the test's", "note": None, "reading": "read at once",
                                "tick_s": None}
    assert "read at once" in energy.Rapl.reading and "read at once" in energy.NvmlPower.reading


def test_without_an_energy_counter_power_samples_are_integrated() -> None:
    with pytest.raises(RuntimeError):
        energy.NvmlEnergy(FakeNvml(energy_mj=None, power_mw=0), None, "old GPU")
    now = [0.0]
    nvml = FakeNvml(energy_mj=None, power_mw=200_000)
    counter = energy.NvmlPower(nvml, None, "old GPU", clock=lambda: now[0])
    counter.close()  # the test drives the samples itself
    now[0] = 2.0
    counter.sample()  # 200 W for 2 s
    nvml.power_mw = 400_000
    now[0] = 3.0  # then a ramp to 400 W over 1 s: 300 J by the trapezoid rule
    assert counter.joules() == pytest.approx(400 + 300) and counter.source == "nvml_power_samples"


def test_a_training_cell_records_energy_over_its_timed_steps_and_evaluation(monkeypatch) -> None:
    """On one fake clock, 0.25 s a step and 1 s an evaluation at 10 W: the training span is exactly
    the 20 timed steps (not the warm-up step, not the FLOP count), and the evaluation's exactly the
    test split's evaluation (not the forgetting text's scoring, not the validation pass)."""
    clock = fake_clock(monkeypatch)
    rec = run_cell(cell("lora", steps=20, warmup_steps=1, eval_batch_size=8, eval_examples=64, validation_examples=8))
    assert rec.status == "ok", rec.error
    e = rec.energy
    assert e.source == "fake" and e.note is None and e.reading == "read at once" and e.tick_s is None
    assert e.train_s == pytest.approx(20 * clock.step_s) and e.train_j == pytest.approx(10.0 * 20 * clock.step_s)
    assert e.train_mean_w == pytest.approx(10.0)
    assert e.train_j_per_step == pytest.approx(e.train_j / 20)
    assert e.train_j_per_1k_tokens == pytest.approx(1000 * e.train_j / (rec.time.tokens_per_step * 20))
    assert rec.time.train_s == pytest.approx(21 * clock.step_s)  # wall time from the first step: warm-up too
    assert e.eval_j == pytest.approx(10.0 * clock.eval_s) and e.eval_mean_w == pytest.approx(10.0)
    assert rec.quality.validation_examples == 8  # it ran, after the evaluation's span


def test_a_cell_whose_nvml_counter_never_ticks_says_it_was_read_at_once(monkeypatch) -> None:
    still = TickingNvml(tick_us=10**12)  # its clock never moves: the counter stays put
    monkeypatch.setattr(energy, "open_counter",
                        lambda device, powercap=None: (energy.NvmlEnergy(still, "gpu", "H200"), None))
    rec = run_cell(cell("lora", steps=2, warmup_steps=0, eval_examples=0))
    assert rec.status == "ok", rec.error
    assert rec.energy.source == "nvml_total_energy" and rec.energy.train_j == 0 and rec.energy.tick_s is None
    assert rec.energy.reading.startswith("read at once") and "no tick in 0.3 s" in rec.energy.reading


def test_on_a_cpu_without_counters_the_record_says_why() -> None:
    zones, why = energy.rapl_zones()
    rec = run_cell(cell("lora", steps=2, warmup_steps=0, eval_examples=0))
    if zones:  # a machine whose RAPL counters this user can read: a measured figure
        assert rec.energy.source == "rapl" and rec.energy.train_j is not None and rec.energy.train_j >= 0
    else:
        assert rec.energy.train_j is None and rec.energy.note == why and rec.energy.source is None
        assert rec.energy.reading is None


def test_an_evaluation_only_cell_records_its_evaluation_energy(monkeypatch) -> None:
    clock = fake_clock(monkeypatch, eval_s=2.0)
    rec = run_cell(cell("icl", options={"shots": 1}, seq_len=64, eval_examples=8, eval_batch_size=8,
                        target_accuracy=0.9))
    assert rec.status == "ok", rec.error
    assert rec.energy.train_j is None
    assert rec.energy.eval_j == pytest.approx(10.0 * clock.eval_s) and rec.energy.eval_mean_w == pytest.approx(10.0)
    assert rec.target.note == "no time to target: the method trains nothing"
