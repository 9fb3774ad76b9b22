"""Energy (bench/measure/energy.py): RAPL package counters summed and unwrapped, NVML's total-energy
counter, power samples integrated where there is none, no figure with the reason where nothing is
readable; and the training scenario's `energy` block over the timed steps and the evaluation."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from bench.exec.worker import run_cell
from bench.measure import energy
from tests.helpers import cell

CPU = torch.device("cpu")
SLACK = 10.0 * 0.01  # joules: 10 ms between two clock reads at the fake counter's 10 W


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


class WallClockWatts(energy.Counter):
    """10 W since it was made: joules follow the wall clock, so the record's figures can be checked."""

    source, scope = "fake", "the test's"

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def joules(self) -> float:
        return 10.0 * (time.perf_counter() - self.t0)


def test_a_training_cell_records_energy_over_its_timed_steps_and_evaluation(monkeypatch) -> None:
    monkeypatch.setattr(energy, "open_counter", lambda device, powercap=None: (WallClockWatts(), None))
    rec = run_cell(cell("lora", steps=20, warmup_steps=1, eval_batch_size=8, eval_examples=64))  # spans of 0.1 s
    assert rec.status == "ok", rec.error
    e = rec.energy
    assert e.source == "fake" and e.note is None
    # the counter and the span read their clocks one after the other: a busy machine can preempt in
    # between, so each figure may be off by a few milliseconds at 10 W (SLACK joules)
    assert e.train_j == pytest.approx(10.0 * e.train_s, rel=0.02, abs=SLACK)
    assert e.train_mean_w == pytest.approx(10.0, abs=SLACK / e.train_s + 0.2)
    assert e.train_j_per_step == pytest.approx(e.train_j / 20)
    assert e.train_j_per_1k_tokens == pytest.approx(1000 * e.train_j / (rec.time.tokens_per_step * 20))
    assert sum(rec.time.step_s) <= e.train_s  # the span holds the timed steps, not the warm-up
    assert e.train_s < sum(rec.time.step_s) + rec.time.train_s  # and not much else
    assert e.eval_j > 0 and e.eval_mean_w == pytest.approx(10.0, abs=SLACK / (e.eval_j / e.eval_mean_w) + 0.2)


def test_on_a_cpu_without_counters_the_record_says_why() -> None:
    zones, why = energy.rapl_zones()
    rec = run_cell(cell("lora", steps=2, warmup_steps=0, eval_examples=0))
    if zones:  # a machine whose RAPL counters this user can read: a measured figure
        assert rec.energy.source == "rapl" and rec.energy.train_j is not None and rec.energy.train_j >= 0
    else:
        assert rec.energy.train_j is None and rec.energy.note == why and rec.energy.source is None


def test_an_evaluation_only_cell_records_its_evaluation_energy(monkeypatch) -> None:
    monkeypatch.setattr(energy, "open_counter", lambda device, powercap=None: (WallClockWatts(), None))
    rec = run_cell(cell("icl", options={"shots": 1}, seq_len=64, eval_examples=8, eval_batch_size=8,
                        target_accuracy=0.9))
    assert rec.status == "ok", rec.error
    assert rec.energy.train_j is None and rec.energy.eval_j > 0
    assert rec.energy.eval_mean_w == pytest.approx(10.0, abs=SLACK / (rec.energy.eval_j / rec.energy.eval_mean_w) + 0.2)
    assert rec.target.note == "no time to target: the method trains nothing"
