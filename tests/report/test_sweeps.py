"""Sweeps in the report (bench/report/sweeps.py): per sweep, model and task the best, median and worst
grid point over seeds, which point was best, a warning when it sits on an edge of the grid, and
every point in sweeps.csv."""
from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from bench.report import render
from bench.report.data import load
from bench.report.sweeps import frame, sweeps
from bench.results import store
from tests.fixtures.make_fixtures import record

# lr -> accuracy of seeds 0 and 1
GRID = {1e-4: (0.70, 0.72), 3e-4: (0.80, 0.84), 1e-3: (0.78, 0.76)}


def _run(tmp_path: Path, grid: dict[float, tuple[float, float]] = GRID, acc: bool = True) -> Path:
    rng = random.Random(5)
    for lr, accs in grid.items():
        for seed, a in enumerate(accs):
            rec = record(rng, model="tiny-llama", variant=f"lora@lr={lr:g}", method="lora", task="synthetic",
                         seed=seed, cuda=False, step_s=0.05, mem_gib=0.3, acc=a if acc else None,
                         settings={"lr": lr})
            rec.set(sweep="lora", sweep_point={"lr": lr})
            if not acc:  # no accuracy: scored by the last training loss, lower is better
                rec.quality.set(train_loss_last=a)
            store.append_record(tmp_path, rec)
    store.append_record(tmp_path, record(rng, model="tiny-llama", variant="ia3", method="ia3", task="synthetic",
                                         seed=0, cuda=False, step_s=0.07, mem_gib=0.7, acc=0.9))
    return tmp_path


def test_best_median_and_worst_over_the_grid_with_seeds_averaged(tmp_path: Path) -> None:
    found = sweeps(load(_run(tmp_path)))
    assert [(s.sweep, s.model, s.task) for s in found] == [("lora", "tiny-llama", "synthetic")]
    row = frame(found).iloc[0]
    assert row["best"] == pytest.approx(82.0) and row["best_at"] == "lr = 0.0003"
    assert row["median"] == pytest.approx(77.0) and row["worst"] == pytest.approx(71.0)
    assert row["points"] == 3 and row["warning"] == ""  # the best is inside the grid
    assert row["grid"] == "lr: 0.0001, 0.0003, 0.001"


@pytest.mark.parametrize(("grid", "warning"), [
    ({1e-4: (0.9, 0.9), 3e-4: (0.8, 0.8), 1e-3: (0.7, 0.7)}, "best at the lowest lr (0.0001): try below it"),
    ({1e-4: (0.7, 0.7), 3e-4: (0.8, 0.8), 1e-3: (0.9, 0.9)}, "best at the highest lr (0.001): try above it"),
])
def test_a_best_point_on_the_grids_edge_is_warned_about(tmp_path: Path, grid: dict, warning: str) -> None:
    assert frame(sweeps(load(_run(tmp_path, grid)))).iloc[0]["warning"] == warning


def test_without_accuracy_the_last_training_loss_scores_lower_is_better(tmp_path: Path) -> None:
    row = frame(sweeps(load(_run(tmp_path, acc=False)))).iloc[0]
    assert row["metric"].startswith("train_loss_last") and row["best"] == pytest.approx(0.71)
    assert row["best_at"] == "lr = 0.0001" and row["warning"].startswith("best at the lowest lr")


def test_a_failed_point_counts_as_unscored(tmp_path: Path) -> None:
    run = _run(tmp_path)
    rng = random.Random(9)
    bad = record(rng, model="tiny-llama", variant="lora@lr=0.01", method="lora", task="synthetic", seed=0,
                 cuda=False, step_s=0.05, mem_gib=0.3, acc=None, settings={"lr": 0.01})
    bad.set(sweep="lora", sweep_point={"lr": 0.01}, status="error", error="RuntimeError: loss is nan")
    store.append_record(run, bad)
    found = sweeps(load(run))
    row = frame(found).iloc[0]
    assert row["points"] == 4 and row["points_scored"] == 3
    assert math.isnan([p for p in found[0].points if p.point == {"lr": 0.01}][0].score)
    assert row["warning"] == ""  # 0.0003 is still inside the grid 0.0001..0.01


def test_the_report_has_the_sweep_table_and_csv(tmp_path: Path) -> None:
    out = render(_run(tmp_path), ["md", "csv"])
    md = (out / "report.md").read_text()
    assert "## Sweeps" in md and "| lora (tiny-llama, synthetic) | lr: 0.0001, 0.0003, 0.001 |" in md
    lines = (out / "sweeps.csv").read_text().splitlines()
    assert lines[0] == "sweep,model,task,variant,lr,accuracy_%,seeds_ok,seeds" and len(lines) == 4


def test_a_run_without_sweeps_has_no_sweep_section_or_csv(tmp_path: Path) -> None:
    rng = random.Random(1)
    store.append_record(tmp_path, record(rng, model="m", variant="lora", method="lora", task="t", seed=0,
                                         cuda=False, step_s=0.05, mem_gib=0.3, acc=0.8))
    out = render(tmp_path, ["md", "csv"])
    assert not (out / "sweeps.csv").exists() and "## Sweeps" not in (out / "report.md").read_text()
