"""The headline peak (bench/results/peaks.py): one definition, and the report, compare, selfcheck,
explain and capacity all give the same figure for the same paged record."""
from __future__ import annotations

import copy
import json
import math
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from bench.report.cells import cell_row
from bench.results import peaks
from bench.results.compare import HEADLINE, compare
from bench.results.record import Record
from bench.results.values import GIB
from bench.tools import capacity, explain, selfcheck
from tests.fixtures.make_fixtures import record
from tests.helpers import cell

MANAGED = 96 * 2**20  # a paged optimizer's state in CUDA managed memory


def paged_record(managed: int = MANAGED, nvml: bool = True) -> Record:
    """A CUDA LoRA record whose optimizer state is paged: torch's peak does not hold it."""
    c = cell("lora", optimizer="paged_adamw")
    rec = record(random.Random(0), model="tiny-llama", variant="lora", method="lora", task="synthetic", seed=0,
                 cuda=True, step_s=0.05, mem_gib=0.5, acc=0.8, settings=c.settings.record())
    rec.set(model_spec=c.model.record(), method_config=c.method.options, task_options=c.task.options, name=c.name)
    rec.optimizer.set(name="paged_adamw", paged_active=True, state_bytes_device=0, state_bytes_managed=managed)
    if not nvml:
        rec.memory.set(nvml_device_peak_bytes=None, nvml_process_peak_bytes=None)
    return rec


def _write(folder: Path, *records: Record) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.jsonl").write_text("".join(json.dumps(r.to_json()) + "\n" for r in records))
    return folder


def test_the_definition_on_cuda_and_on_the_cpu() -> None:
    rec = paged_record()
    torch_peak = rec.memory.peak_allocated_bytes
    assert peaks.headline_peak(rec) == (torch_peak + MANAGED, peaks.TORCH_MANAGED)
    rec.optimizer.state_bytes_managed = 0
    assert peaks.headline_peak(rec) == (torch_peak, peaks.TORCH)
    cpu = record(random.Random(0), model="tiny-llama", variant="lora", method="lora", task="synthetic", seed=0,
                 cuda=False, step_s=0.05, mem_gib=0.25, acc=0.8)
    cpu.optimizer.state_bytes_managed = MANAGED  # never on the CPU: the figure is the resident set
    assert peaks.headline_peak(cpu) == (cpu.memory.peak_rss_above_baseline_bytes, peaks.CPU)
    rec.memory.peak_allocated_bytes = None
    assert math.isnan(peaks.headline_peak(rec).bytes)


def test_report_compare_selfcheck_explain_and_capacity_agree_on_a_paged_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = paged_record()
    want = rec.memory.peak_allocated_bytes + MANAGED
    source = peaks.TORCH_MANAGED

    row = cell_row(rec)  # the report
    assert row["peak_mem_GiB"] * GIB == pytest.approx(want) and row["peak_mem_source"] == source

    run = _write(tmp_path / "run", rec)  # compare
    (judged,) = [f for f in compare(run, run).findings if f.metric.startswith(HEADLINE)]
    assert judged.figures == (want, want) and source in judged.metric

    harness = selfcheck.harness_result(rec)  # selfcheck, both sides
    assert (harness["peak_bytes"], harness["peak_kind"]) == (want, source)
    state = torch.empty(MANAGED // 4)
    state.is_paged = True  # as bitsandbytes flags its paged state
    opt = SimpleNamespace(state={"p": {"state1": state, "step": 3}})
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: rec.memory.peak_allocated_bytes)
    assert selfcheck.bare_peak(True, "cuda", opt, None) == (want, source)

    monkeypatch.setattr(explain, "_predict", lambda c, d: {"parameters_bytes": 1, "gradients_bytes": 1,
                                                           "optimizer_bytes": 0, "activations_bytes": 1,
                                                           "peak_bytes": 3, "optimizer_managed_bytes": 0})
    ex = explain.one(rec)  # explain
    assert ex.measured_bytes == want and source in ex.title

    probed = capacity.cell_capacity(cell("lora"), "batch_size", 2**40, 4, lambda c, v, value: copy.deepcopy(rec))
    assert {p["peak_bytes"] for p in probed["probes"]} == {want} and probed["best_peak_bytes"] == want


@pytest.mark.parametrize("nvml", [False, True])
def test_a_paged_optimizer_whose_managed_state_grows_is_a_regression(tmp_path: Path, nvml: bool) -> None:
    # torch's peak is unchanged; NVML is null (a container) or sees the growth diluted in the whole
    # device: 16 MiB is 2.6% of the 0.59 GiB headline, 1.5% of the 1.05 GiB device figure
    base = paged_record(nvml=nvml)
    grown = paged_record(MANAGED + 16 * 2**20, nvml=nvml)
    if nvml:
        grown.memory.nvml_device_peak_bytes = base.memory.nvml_device_peak_bytes + 16 * 2**20
    res = compare(_write(tmp_path / "base", base), _write(tmp_path / "current", grown), metrics="memory")
    assert res.exit_code == 1, res.markdown
    assert [f.metric for f in res.regressions] == [f"{HEADLINE} ({peaks.TORCH_MANAGED})"]
    assert {f.metric: f.verdict for f in res.findings}["torch peak allocated"] == "same"


def test_explain_puts_the_models_figure_on_the_headlines_accounting(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = paged_record()
    predicted = {"parameters_bytes": 1, "gradients_bytes": 1, "optimizer_bytes": 0, "activations_bytes": 1,
                 "peak_bytes": rec.memory.peak_allocated_bytes, "optimizer_managed_bytes": MANAGED}
    monkeypatch.setattr(explain, "_predict", lambda c, d: predicted)
    assert explain.one(rec).unexplained_bytes == 0  # the managed state is neither measured nor predicted apart
    assert peaks.predicted_headline(predicted, cuda=False) == rec.memory.peak_allocated_bytes


def test_selfcheck_says_when_its_sides_give_peaks_of_different_kinds(tmp_path: Path) -> None:
    def side(kind: str) -> Any:
        return lambda c, s: {"step_s_median": 0.1, "peak_bytes": 1000, "peak_kind": kind}

    same = selfcheck.compare(cell("lora"), 2, tmp_path, side(peaks.TORCH), side(peaks.TORCH), say=lambda _: None)
    assert same["peak_kind"] == peaks.TORCH
    mixed = selfcheck.compare(cell("lora"), 2, tmp_path, side(peaks.TORCH), side(peaks.TORCH_MANAGED),
                              say=lambda _: None)
    assert mixed["peak_kind"].startswith("headline peaks of different kinds") and peaks.TORCH_MANAGED in mixed["peak_kind"]
