"""Accuracies side by side on unequal footing are said to be: a row scored on fewer test or
validation examples than the others of its task, and an in-context-learning row that fit fewer
shots than it asked for, each get a sentence in the summary's notes and above the charts."""
from __future__ import annotations

import random
from pathlib import Path

from bench.report import render
from bench.report.data import load
from bench.report.footing import notes
from bench.report.groups import seed_groups
from bench.results import store
from bench.results.record import Record
from tests.fixtures.make_fixtures import record


def _rec(variant: str, method: str, examples: int, task: str = "mr", validation: int = 256,
         shots: tuple[int, int] | None = None) -> Record:
    rec = record(random.Random(0), model="m", variant=variant, method=method, task=task, seed=0, cuda=False,
                 step_s=0.1, mem_gib=1.0, acc=0.8)
    rec.quality.set(eval_examples=examples, validation_examples=validation)
    if shots:
        rec.quality.shots_used = shots[0]
        rec.method_config = {"shots": shots[1]}
    return rec


def test_equal_footing_says_nothing() -> None:
    assert notes(seed_groups([_rec("lora", "lora", 500), _rec("full", "full", 500),
                              _rec("icl", "icl", 100, task="sst2", shots=(4, 4))])) == []


def test_a_row_on_fewer_test_examples_is_named_with_both_counts() -> None:
    (line,) = notes(seed_groups([_rec("lora", "lora", 500), _rec("full", "full", 500), _rec("icl-4shot", "icl", 100)]))
    assert line.startswith("On mr, test accuracy is not scored on the same number of examples by every row: "
                           "icl-4shot on 100, the other rows on 500")


def test_validation_counts_and_missing_shots_are_said_too() -> None:
    lines = notes(seed_groups([_rec("lora", "lora", 500, validation=500), _rec("full", "full", 500, validation=100),
                               _rec("x", "lora", 500, validation=500), _rec("icl", "icl", 500, shots=(2, 4))]))
    assert any(ln.startswith("On mr, validation accuracy is not scored") and "full on 100" in ln for ln in lines)
    assert "icl fit 2 of 4 demonstrations in its seq_len (whole demonstrations only; quality.shots_used)." in lines
    assert not any("test accuracy" in ln for ln in lines)


def test_the_report_says_it_in_the_summary_and_above_the_charts(tmp_path: Path) -> None:
    for rec in (_rec("lora", "lora", 500), _rec("full", "full", 500), _rec("icl-4shot", "icl", 100)):
        store.append_record(tmp_path, rec)
    text = (render(tmp_path, ["md", "png"]) / "report.md").read_text()
    summary = text[text.index("## Summary"):text.index("## Cells")]
    charts = text[text.index("## Charts"):]
    for part in (summary, charts):
        assert "On mr, test accuracy is not scored on the same number of examples by every row: icl-4shot on 100" in part
    assert load(tmp_path).groups["task"].tolist() == ["mr"] * 3
