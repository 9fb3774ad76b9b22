"""Sweeps in the report (bench/report/sweeps.py): per sweep, model and task the points ranked on
validation accuracy over seeds, the chosen point (the best on validation) with its test accuracy,
a warning when it sits on an edge of the grid, every point with both accuracies in the section and
in sweeps.csv, and only the chosen point anywhere else. Without validation accuracy nothing is
chosen, and the report says so."""
from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from bench.report import render
from bench.report.data import load
from bench.report.sweeps import frame, points_frame, sweeps
from bench.results import store
from tests.fixtures.make_fixtures import record

# lr -> (validation, test) accuracy of seeds 0 and 1: validation's best is 3e-4, test's is 1e-3
GRID = {1e-4: ((0.70, 0.72), (0.71, 0.71)), 3e-4: ((0.80, 0.84), (0.78, 0.80)),
        1e-3: ((0.78, 0.76), (0.86, 0.88))}


def _run(tmp_path: Path, grid: dict = GRID, validation: bool = True) -> Path:
    rng = random.Random(5)
    for lr, (vals, tests) in grid.items():
        for seed, (v, a) in enumerate(zip(vals, tests)):
            rec = record(rng, model="tiny-llama", variant=f"lora@lr={lr:g}", method="lora", task="synthetic",
                         seed=seed, cuda=False, step_s=0.05, mem_gib=0.3, acc=a, settings={"lr": lr})
            rec.set(sweep="lora", sweep_point={"lr": lr})
            rec.quality.set(validation_accuracy=v if validation else None, train_loss_last=1 - v)
            if not validation:
                rec.quality.set(validation_examples=0, validation_note="validation off (validation_examples = 0)")
            store.append_record(tmp_path, rec)
    store.append_record(tmp_path, record(rng, model="tiny-llama", variant="ia3", method="ia3", task="synthetic",
                                         seed=0, cuda=False, step_s=0.07, mem_gib=0.7, acc=0.9))
    return tmp_path


def test_points_are_ranked_on_validation_with_seeds_averaged(tmp_path: Path) -> None:
    found = sweeps(load(_run(tmp_path)))
    assert [(s.sweep, s.model, s.task) for s in found] == [("lora", "tiny-llama", "synthetic")]
    assert [p.point["lr"] for p in found[0].ranked()] == [3e-4, 1e-3, 1e-4]  # test would say 1e-3 first
    row = frame(found).iloc[0]
    assert row["chosen_on"] == "validation accuracy"
    assert row["best"] == pytest.approx(82.0) and row["best_at"] == "lr = 0.0003"
    assert row["chosen_test"] == pytest.approx(79.0)  # the chosen point's test accuracy, reported
    assert row["median"] == pytest.approx(77.0) and row["worst"] == pytest.approx(71.0)
    assert row["points"] == 3 and row["warning"] == "" and row["note"] == ""  # the best is inside the grid
    assert row["grid"] == "lr: 0.0001, 0.0003, 0.001"


@pytest.mark.parametrize(("grid", "warning"), [
    ({1e-4: ((0.9, 0.9), (0.7, 0.7)), 3e-4: ((0.8, 0.8), (0.8, 0.8)), 1e-3: ((0.7, 0.7), (0.9, 0.9))},
     "best at the lowest lr (0.0001): try below it"),
    ({1e-4: ((0.7, 0.7), (0.9, 0.9)), 3e-4: ((0.8, 0.8), (0.8, 0.8)), 1e-3: ((0.9, 0.9), (0.7, 0.7))},
     "best at the highest lr (0.001): try above it"),
])
def test_a_chosen_point_on_the_grids_edge_is_warned_about(tmp_path: Path, grid: dict, warning: str) -> None:
    assert frame(sweeps(load(_run(tmp_path, grid)))).iloc[0]["warning"] == warning


def test_without_validation_accuracy_nothing_is_chosen_and_the_report_says_why(tmp_path: Path) -> None:
    data = load(_run(tmp_path, validation=False))
    (s,) = sweeps(data)
    assert s.ranked() == [] and s.chosen is None  # neither test accuracy nor the training loss stands in
    row = frame([s]).iloc[0]
    assert row["best_at"] == "" and row["chosen_on"] == "" and row["warning"] == ""
    assert row["note"] == ("no point chosen: validation off (validation_examples = 0); "
                           "test accuracy is never used to choose")
    assert list(data.groups["variant"]) == ["ia3"]  # no point of the sweep is shown as its result
    md = (render(data.run_dir, ["md"]) / "report.md").read_text()
    assert "no point chosen: validation off" in md and "## Sweeps" in md
    unvalidated = md.split("## Cells without validation accuracy")[1].split("\n## ")[0]
    assert "lora@lr=0.0003/synthetic/b4x32/seed0: validation off (validation_examples = 0)" in unvalidated
    assert "(3 points not chosen are in the Sweeps section only)" in md.split("## Summary")[1].split("\n## ")[0]


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
    failed = [p for p in found[0].points if p.point == {"lr": 0.01}][0]
    assert math.isnan(failed.validation) and math.isnan(failed.test) and failed.finished == 0
    assert row["warning"] == ""  # 0.0003 is still inside the grid 0.0001..0.01


def test_only_the_chosen_point_is_shown_outside_the_sweeps_section(tmp_path: Path) -> None:
    data = load(_run(tmp_path))
    assert sorted(data.groups["variant"]) == ["ia3", "lora@lr=0.0003"]
    assert sorted({g.label for g in data.seed_groups}) == ["ia3", "lora@lr=0.0003"]
    assert sorted(set(data.shown_cells["variant"])) == ["ia3", "lora@lr=0.0003"]
    assert len(data.cells) == 7  # results.csv keeps every cell
    points = points_frame(data.sweeps)
    assert list(points["chosen"]) == [False, True, False]
    assert points["accuracy_%"].tolist() == pytest.approx([71.0, 79.0, 87.0])  # every point's test, reported


def test_the_report_has_the_sweep_tables_and_csv(tmp_path: Path) -> None:
    out = render(_run(tmp_path), ["md", "csv"])
    md = (out / "report.md").read_text()
    section = md.split("## Sweeps")[1].split("\n## ")[0]
    assert "| lora (tiny-llama, synthetic) | lr: 0.0001, 0.0003, 0.001 | validation accuracy | lr = 0.0003 |" in section
    chosen = next(ln for ln in section.splitlines() if "**lr = 0.0003**" in ln)
    assert "**82.0**" in chosen and "| 79.0 |" in chosen and "**chosen**" in chosen
    assert "| lr = 0.001 | 77.0 | 87.0 |" in section  # the other points: both accuracies, not chosen
    summary = md.split("## Summary")[1].split("\n## ")[0]
    assert "lora@lr=0.0003" in summary and "lora@lr=0.001 " not in summary and "lora@lr=0.0001" not in summary
    assert "validation accuracy" in summary  # says what its best was chosen on
    lines = (out / "sweeps.csv").read_text().splitlines()
    assert lines[0] == ("sweep,model,task,variant,lr,validation_accuracy_%,accuracy_%,train_loss_last,chosen,"
                        "seeds_ok,seeds") and len(lines) == 4
    assert lines[2].startswith("lora,tiny-llama,synthetic,lora@lr=0.0003,0.0003,82,79,") and ",True," in lines[2]


def test_a_run_without_sweeps_has_no_sweep_section_or_csv(tmp_path: Path) -> None:
    rng = random.Random(1)
    store.append_record(tmp_path, record(rng, model="m", variant="lora", method="lora", task="t", seed=0,
                                         cuda=False, step_s=0.05, mem_gib=0.3, acc=0.8))
    out = render(tmp_path, ["md", "csv"])
    assert not (out / "sweeps.csv").exists() and "## Sweeps" not in (out / "report.md").read_text()
