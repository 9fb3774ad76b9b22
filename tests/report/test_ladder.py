"""Recipe ladders in the report (bench/report/ladder.py): rungs in order, what each adds read off the
records, changes against the nearest rung above that finished, a failed rung kept with its status,
and the ladder's table, CSV and chart in the rendered report."""
from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from bench.report import render
from bench.report.data import load
from bench.report.ladder import frame, ladders
from bench.results import store
from bench.results.record import Record
from tests.fixtures.make_fixtures import record

RUNGS = [  # (variant, method, settings, step s, peak GiB)
    ("full", "full", {}, 0.100, 2.0),
    ("lora", "lora", {}, 0.080, 1.0),
    ("lora+packed", "lora", {"padding": "packed"}, 0.050, 0.9),
    ("lora+packed+compile", "lora", {"padding": "packed", "compile": "default"}, 0.0, 0.0),  # fails
    ("lora+packed+ckpt", "lora", {"padding": "packed", "gradient_checkpointing": True}, 0.060, 0.5),
]


def _run(tmp_path: Path) -> Path:
    rng = random.Random(3)
    for seed in (0, 1):
        for rung, (variant, method, settings, step_s, mem) in enumerate(RUNGS):
            rec: Record = record(rng, model="tiny-llama", variant=variant, method=method, task="synthetic",
                                 seed=seed, cuda=False, step_s=step_s or 0.1, mem_gib=mem or 1.0, acc=0.8,
                                 settings=settings)
            rec.set(ladder="recipe", rung=rung)
            if step_s == 0.0:
                rec.set(status="error", error="RuntimeError: compile failed")
                rec.memory.set(peak_rss_above_baseline_bytes=None, peak_rss_bytes=None)
                rec.time.set(step_s=None, step_s_median=None, tokens_per_s=None)
                rec.quality.set(accuracy=None)
            store.append_record(tmp_path, rec)
    # a cell outside any ladder stays out of the ladder tables
    store.append_record(tmp_path, record(rng, model="tiny-llama", variant="ia3", method="ia3", task="synthetic",
                                         seed=0, cuda=False, step_s=0.07, mem_gib=0.7, acc=0.7))
    return tmp_path


def test_rungs_say_what_they_add_and_change_against_the_rung_above(tmp_path: Path) -> None:
    found = ladders(load(_run(tmp_path)))
    assert list(found) == [("recipe", "tiny-llama", "synthetic")]
    rungs = found[("recipe", "tiny-llama", "synthetic")]
    assert [r.variant for r in rungs] == [v for v, *_ in RUNGS]
    assert rungs[0].adds == "base: full"
    assert rungs[1].adds.startswith("method = lora") and "lora.r = 8" in rungs[1].adds
    assert rungs[2].adds == "padding = packed"
    assert rungs[3].adds == "compile = default" and rungs[3].status == "error"
    assert rungs[4].adds == "compile = off, activation_checkpointing = full"  # what the row really changes
    f = frame(rungs)
    assert f["peak_mem_change_%"][2] == pytest.approx(100 * (0.9 / 1.0 - 1), abs=0.5)
    assert math.isnan(f["peak_mem_GiB"][3])
    # the failed rung is skipped: the one after it compares with the last rung that finished
    assert f["peak_mem_change_%"][4] == pytest.approx(100 * (0.5 / 0.9 - 1), abs=0.5)
    assert f["tokens_per_s_change_%"][2] > 40  # 80 ms -> 50 ms a step


def test_the_report_has_the_ladder_table_csv_and_chart(tmp_path: Path) -> None:
    out = render(_run(tmp_path), ["md", "csv", "png"])
    md = (out / "report.md").read_text()
    assert "Ladder 'recipe': tiny-llama on synthetic" in md and "padding = packed" in md
    assert (out / "ladder.png").stat().st_size > 0
    lines = (out / "ladders.csv").read_text().splitlines()
    assert lines[0].startswith("ladder,model,task,rung,variant,adds") and len(lines) == 1 + len(RUNGS)


def test_a_run_without_ladders_says_so_and_writes_no_ladder_csv(tmp_path: Path) -> None:
    rng = random.Random(1)
    store.append_record(tmp_path, record(rng, model="m", variant="lora", method="lora", task="t", seed=0,
                                         cuda=False, step_s=0.05, mem_gib=0.3, acc=0.8))
    out = render(tmp_path, ["md", "csv", "png"])
    assert not (out / "ladders.csv").exists() and not (out / "ladder.png").exists()
    assert "Chart 'ladder' skipped: no ladder in this run" in (out / "report.md").read_text()
