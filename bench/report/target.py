"""Time to a target accuracy (the records' `target` blocks): per seed group, how many seeds reached
the target, and the mean and 95% CI over those seeds of the steps, training seconds, tokens and
energy it took; groups ranked by training seconds, those that never reached it last. And the chart
of validation accuracy against training seconds, with the target drawn in."""
from __future__ import annotations

import math
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from bench.report.data import RunData
from bench.report.document import Table
from bench.report.groups import mean_ci
from bench.report.points import LINESTYLES
from bench.report.style import GREY, figure_legend, legend_outside, panels
from bench.results.values import num

DASH = "–"


def _reached(rec: Any, field: str) -> float:
    t = rec.target
    return num(getattr(t, field)) if rec.ok and t.reached else math.nan


def frame(data: RunData) -> pd.DataFrame:
    """One row per seed group with a target: seeds reached / with a curve, and mean, CI of each figure."""
    rows = []
    for g in data.seed_groups:
        measured = [r for r in g.ok if r.target.curve]
        if not measured:
            continue
        row: dict[str, Any] = {"group": g.label, "method": g.method, "task": str(measured[0].task or ""),
                               "target_%": 100 * num(measured[0].target.value),
                               "reached": sum(1 for r in measured if r.target.reached), "seeds": len(measured)}
        for field, out in (("step", "steps"), ("train_s", "train_s"), ("tokens", "tokens"), ("joules", "joules")):
            mean, half, _ = mean_ci([_reached(r, field) for r in measured])
            row[out], row[f"{out}_ci95"] = mean, half
        row["note"] = "; ".join(dict.fromkeys(r.target.note for r in measured if r.target.note))
        rows.append(row)
    if not rows:
        return pd.DataFrame()
    f = pd.DataFrame(rows)
    f["_never"] = f["reached"] == 0
    return f.sort_values(["task", "_never", "train_s"], kind="stable").drop(columns="_never").reset_index(drop=True)


def _pm(mean: float, half: float, places: int, scale: float = 1.0) -> str:
    if math.isnan(mean):
        return DASH
    text = f"{mean / scale:,.{places}f}"
    return text if math.isnan(half) else f"{text} ± {half / scale:,.{places}f}"


def table(data: RunData) -> Table | None:
    f = frame(data)
    if f.empty:
        return None
    shown = pd.DataFrame({
        "Method / variant": f["group"],
        "Task": f["task"],
        "Target (%)": [f"{v:.1f}" for v in f["target_%"]],
        "Reached": [f"{a}/{b}" for a, b in zip(f["reached"], f["seeds"])],
        "Training time (s)": [_pm(m, h, 1) for m, h in zip(f["train_s"], f["train_s_ci95"])],
        "Steps": [_pm(m, h, 0) for m, h in zip(f["steps"], f["steps_ci95"])],
        "Tokens (k)": [_pm(m, h, 1, 1e3) for m, h in zip(f["tokens"], f["tokens_ci95"])],
        "Energy (kJ)": [_pm(m, h, 2, 1e3) for m, h in zip(f["joules"], f["joules_ci95"])],
    })
    return Table(shown, sortable=False)


def target_chart(data: RunData, colours: dict[str, str]) -> Figure | None:
    """Validation accuracy against training seconds, each cell a line (a group's seeds share a
    colour), one panel per task, the target dashed."""
    curves = [(g, r) for g in data.seed_groups for r in g.ok if r.target.curve]
    if not curves:
        return None
    tasks = list(dict.fromkeys(str(r.task or "") for _, r in curves))
    fig, axes = panels(tasks, "Validation accuracy on the way to the target (evaluations excluded from time)")
    seen: set[str] = set()
    style: dict[str, str] = {}  # groups of one method: one colour, a line style each
    per_method: dict[str, int] = {}
    for g, r in curves:
        if g.key not in style:
            n = per_method.get(g.method, 0)
            style[g.key], per_method[g.method] = LINESTYLES[n % len(LINESTYLES)], n + 1
        ax = axes[str(r.task or "")]
        xs = [num(p.get("train_s")) for p in r.target.curve]
        ys = [100 * num(p.get("accuracy")) for p in r.target.curve]
        ax.plot(xs, ys, marker="o", markersize=3, linewidth=1, color=colours[g.method], linestyle=style[g.key],
                label=g.label if g.key not in seen else None)
        seen.add(g.key)
        if r.target.reached:
            ax.plot([num(r.target.train_s)], [100 * num(r.target.value)], marker="*", markersize=9,
                    color=colours[g.method], linestyle="none")
    for task, ax in axes.items():
        values = {100 * num(r.target.value) for _, r in curves if str(r.task or "") == task}
        for v in values:
            ax.axhline(v, color=GREY, linewidth=0.8, linestyle="--", label=f"target {v:.1f}%")
        ax.set_xlabel("Training time, s (warm-up included)")
        ax.set_ylabel("Validation accuracy (%)")
    if len(axes) == 1:
        legend_outside(next(iter(axes.values())))
    else:
        figure_legend(fig, axes.values())
    return fig
