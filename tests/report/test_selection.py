"""No choice the report makes reads the test split (STYLE.md, rule 10): a sweep's chosen point and its
ranking, which groups and cells the summary, the cell table and the charts show, the bold "best"
of the summary, the cell table and the LaTeX table, the Pareto front of both Pareto charts, the
ladders (which choose nothing) and the time-to-target ranking all follow validation accuracy.

The run has validation and test disagreeing everywhere: each selection is checked against the
validation answer, and then the whole set of selections must stay the same when every test
accuracy is turned upside down, and change when validation accuracy is."""
from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any, Callable

import matplotlib.pyplot as plt
import pytest

from bench.report import render
from bench.report.data import RunData, load
from bench.report.ladder import ladders
from bench.report.ladder import table as ladder_table
from bench.report.points import energy_chart, front_rows, pareto_chart
from bench.report.style import method_colours, style
from bench.report.sweeps import points_frame
from bench.report.tables import cells_table, latex, summary_frame
from bench.report.target import frame as target_frame
from bench.results import store
from bench.results.record import Record
from tests.fixtures.make_fixtures import _energy, _fill_losses, record

# variant -> (method, test accuracy, validation accuracy, peak GiB, seconds to the target or None);
# lora@... are the points of one sweep, ladder-* the rungs of one ladder
ROWS = {
    "full": ("full", 0.90, 0.70, 1.00, 30.0),  # the best on test, nearly the worst on validation
    "ia3": ("ia3", 0.70, 0.88, 0.60, 10.0),  # the reverse: the best on validation
    "prompt": ("prompt_tuning", 0.60, 0.60, 0.20, None),
    "lora@lr=0.0001": ("lora", 0.92, 0.75, 0.30, None),  # test's pick of the sweep
    "lora@lr=0.0003": ("lora", 0.80, 0.85, 0.31, None),  # validation's pick
    "lora@lr=0.001": ("lora", 0.85, 0.80, 0.32, None),
    "ladder-a": ("lora", 0.83, 0.70, 0.40, None),
    "ladder-b": ("lora", 0.70, 0.80, 0.45, None),
}
LR = {"lora@lr=0.0001": 1e-4, "lora@lr=0.0003": 3e-4, "lora@lr=0.001": 1e-3}


def _records() -> list[Record]:
    rng = random.Random(3)
    out = []
    for variant, (method, test, val, gib, target_s) in ROWS.items():
        for seed in (0, 1):
            rec = record(rng, model="tiny-llama", variant=variant, method=method, task="synthetic", seed=seed,
                         cuda=False, step_s=0.05, mem_gib=gib, acc=test, settings={"lr": LR.get(variant, 1e-4)})
            rec.quality.validation_accuracy = val
            if variant in LR:
                rec.set(sweep="lora", sweep_point={"lr": LR[variant]})
            if variant.startswith("ladder-"):
                rec.set(ladder="steps", rung=0 if variant == "ladder-a" else 1)
            if target_s is not None:  # time to 75% validation accuracy: scored on validation only
                rec.target.set(metric="accuracy", value=0.75, every=10, examples=200, reached=True, step=20,
                               train_s=target_s + seed, tokens=2560, joules=None,
                               curve=[{"step": 20, "train_s": target_s + seed, "tokens": 2560, "joules": None,
                                       "accuracy": 0.76}])
            out.append(_energy(_fill_losses(rec)))
    return out


def _write(folder: Path, records: list[Record]) -> RunData:
    folder.mkdir()
    for rec in records:
        store.append_record(folder, rec)
    return load(folder)


def _flipped(records: list[Record], field: str) -> list[Record]:
    """The same records with every `quality.FIELD` turned upside down (1 - value)."""
    out = copy.deepcopy(records)
    for rec in out:
        value = getattr(rec.quality, field)
        if value is not None:
            setattr(rec.quality, field, round(1 - value, 6))
    return out


def _bold(table: Any) -> dict[str, list[str]]:
    """Column -> the rows (first column's text) in bold."""
    first = table.shown.columns[0]
    bold = table.bold if table.bold is not None else None
    if bold is None:
        return {}
    return {col: [str(table.shown.iloc[i][first]) for i in range(len(bold)) if bold.iloc[i][col]]
            for col in bold.columns if bold[col].any()}


def _chart(build: Callable[..., Any], data: RunData) -> tuple[list[str], list[float]]:
    """The labels a Pareto chart plots, and the x values of its front line."""
    with style():
        fig = build(data, method_colours(data.cells["method"]))
    ax = fig.axes[0]
    labels = sorted(t.get_text().replace("\n", "") for t in ax.texts)
    fronts = [ln for ln in ax.get_lines() if str(ln.get_label()).startswith("Pareto front")]
    xs = [round(float(x), 6) for ln in fronts for x in ln.get_xdata()]
    plt.close(fig)
    return labels, xs


def selections(data: RunData) -> dict[str, Any]:
    """Every choice the report makes from results, in comparable form."""
    g = data.groups
    shown, bold = summary_frame(data)
    fronts = {x: sorted(g.iloc[front_rows(g, x)]["group"]) for x in ("peak_mem_GiB", "train_kJ")}
    return {
        "sweep chosen": [(s.sweep, s.chosen.variant if s.chosen else None) for s in data.sweeps],
        "sweep ranked": [[p.variant for p in s.ranked()] for s in data.sweeps],
        "sweeps.csv chosen": points_frame(data.sweeps)[["variant", "chosen"]].values.tolist(),
        "groups shown": sorted(g["group"]),
        "seed groups shown": sorted(x.label for x in data.seed_groups),
        "cells shown": sorted(data.shown_cells["name"]),
        "summary bold": {c: list(shown.loc[bold[c], "Method / variant"]) for c in bold.columns if bold[c].any()},
        "cells bold": _bold(cells_table(data)),
        "latex bold": [ln.split("&")[0] for ln in latex(data).splitlines() if r"\textbf" in ln],
        "pareto fronts": fronts,
        "pareto chart": _chart(pareto_chart, data),
        "energy chart": _chart(energy_chart, data),
        "ladders": {str(k): (_bold(ladder_table(r)), [x.variant for x in r]) for k, r in ladders(data).items()},
        "time to target": list(target_frame(data)["group"]),
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, RunData]:
    root = tmp_path_factory.mktemp("selection")
    base = _records()
    return {"base": _write(root / "base", base),
            "test flipped": _write(root / "test", _flipped(base, "accuracy")),
            "validation flipped": _write(root / "validation", _flipped(base, "validation_accuracy"))}


def test_every_selection_follows_validation(runs: dict[str, RunData]) -> None:
    got = selections(runs["base"])
    assert got["sweep chosen"] == [("lora", "lora@lr=0.0003")]
    assert got["sweep ranked"] == [["lora@lr=0.0003", "lora@lr=0.001", "lora@lr=0.0001"]]
    assert [v for v, chosen in got["sweeps.csv chosen"] if chosen] == ["lora@lr=0.0003"]
    assert got["groups shown"] == got["seed groups shown"] == sorted(
        ["full", "ia3", "prompt", "lora@lr=0.0003", "ladder-a", "ladder-b"])
    assert not any("lora@lr=0.001" in n or "lora@lr=0.0001" in n for n in got["cells shown"])
    assert got["summary bold"]["Accuracy (%)"] == got["summary bold"]["Validation acc. (%)"] == ["ia3"]
    assert got["cells bold"]["Accuracy (%)"] == [f"tiny-llama/ia3/synthetic/b4x32/seed{s}" for s in (0, 1)]
    assert got["pareto fronts"]["peak_mem_GiB"] == ["ia3", "lora@lr=0.0003", "prompt"]  # on test: full, not ia3
    assert got["pareto chart"][1] == [0.2, 0.31, 0.6]  # the front line runs through those three
    assert "lora@lr=0.0001" not in got["pareto chart"][0] and "lora@lr=0.0003" in got["pareto chart"][0]
    assert all(bold == {} for bold, _ in got["ladders"].values())  # a ladder lists its rungs, chooses none
    assert got["time to target"] == ["ia3", "full"]  # by seconds to the validation target, not by test


def test_no_selection_moves_when_test_accuracy_does(runs: dict[str, RunData]) -> None:
    base, flipped = selections(runs["base"]), selections(runs["test flipped"])
    assert runs["base"].groups["accuracy_%"].tolist() != runs["test flipped"].groups["accuracy_%"].tolist()
    for key in base:
        assert flipped[key] == base[key], f"{key} read the test split"


def test_the_selections_move_with_validation_accuracy(runs: dict[str, RunData]) -> None:
    base, flipped = selections(runs["base"]), selections(runs["validation flipped"])
    for key in ("sweep chosen", "summary bold", "cells bold", "pareto fronts"):
        assert flipped[key] != base[key], f"{key} does not follow validation accuracy"


def test_the_report_says_what_its_choices_were_made_on(runs: dict[str, RunData], tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "results.jsonl").write_text((runs["base"].run_dir / "results.jsonl").read_text())
    md = (render(folder, ["md"]) / "report.md").read_text()
    summary = md.split("## Summary")[1].split("\n## ")[0]
    assert "best validation accuracy; the figure shown is its test accuracy" in summary
    assert "Sweeps (each point chosen on validation accuracy" in md
    assert "**Validation accuracy**" in md and "nothing in this report is chosen on it" in md
    rows = [json.loads(ln) for ln in (folder / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 16  # every cell is still in the results, and in results.csv


def test_without_validation_accuracy_nothing_is_chosen_on_test_instead(tmp_path: Path) -> None:
    records = _records()
    for rec in records:
        rec.quality.validation_accuracy = None
    data = _write(tmp_path / "run", records)
    got = selections(data)
    assert got["sweep chosen"] == [("lora", None)] and got["sweep ranked"] == [[]]
    assert "Accuracy (%)" not in got["summary bold"] and "Accuracy (%)" not in got["cells bold"]
    assert got["pareto fronts"] == {"peak_mem_GiB": [], "train_kJ": []} and got["pareto chart"][1] == []
    assert not any(name.startswith("tiny-llama/lora@") for name in got["cells shown"])
    md = (render(data.run_dir, ["md"]) / "report.md").read_text()
    assert "No group recorded a validation accuracy, so no accuracy is marked best" in md
