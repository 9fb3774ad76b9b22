"""Sweeps: a method row with `sweep = { lr = [...] }` runs one cell per grid point (bench/config.py).
Per sweep, model and task: the best, median and worst point over the grid (seeds averaged), which
point was best, and a warning when the best sits on an edge of a numeric axis of the grid (the
optimum may lie beyond it). The score is accuracy where the cells have one, else the last training
loss (lower is better), and the table says which."""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bench.report.data import RunData
from bench.report.document import Table

DASH = "–"


@dataclass
class Point:
    point: dict[str, Any]
    variant: str
    score: float  # seeds averaged over ok cells; NaN when none finished
    seeds_ok: int
    seeds: int


@dataclass
class Sweep:
    sweep: str
    model: str
    task: str
    metric: str  # the column scored: accuracy_% or train_loss_last
    lower_is_better: bool
    points: list[Point]

    def ranked(self) -> list[Point]:
        scored = [p for p in self.points if not math.isnan(p.score)]
        return sorted(scored, key=lambda p: p.score if self.lower_is_better else -p.score)

    def edge_warning(self) -> str:
        """Where the best point sits on the edge of a numeric axis with 2+ values: which, and which way."""
        ranked = self.ranked()
        if not ranked:
            return ""
        best, notes = ranked[0].point, []
        for key in best:
            values = sorted({p.point[key] for p in self.points
                             if isinstance(p.point[key], (int, float)) and not isinstance(p.point[key], bool)})
            if len(values) < 2 or best[key] not in values:
                continue
            if best[key] == values[0]:
                notes.append(f"best at the lowest {key} ({best[key]:g}): try below it")
            elif best[key] == values[-1]:
                notes.append(f"best at the highest {key} ({best[key]:g}): try above it")
        return "; ".join(notes)


def _label(point: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}" for k, v in point.items())


def sweeps(data: RunData) -> list[Sweep]:
    c = data.cells
    if "sweep" not in c or not (c["sweep"] != "").any():
        return []
    by_key: dict[tuple[str, str, str], dict[str, list[int]]] = {}
    for i, row in c.iterrows():
        if row["sweep"]:
            key = (row["sweep"], row["model"], row["task"])
            by_key.setdefault(key, {}).setdefault(row["sweep_point"], []).append(i)
    out = []
    for (name, model, task), points in by_key.items():
        rows = [i for idx in points.values() for i in idx]
        ok = c.loc[rows][c.loc[rows]["status"] == "ok"]
        metric = "accuracy_%" if ok["accuracy_%"].notna().any() else "train_loss_last"
        found = []
        for point, idx in points.items():
            part = c.loc[idx]
            good = part[part["status"] == "ok"][metric].dropna().tolist()
            found.append(Point(json.loads(point), str(part.iloc[0]["variant"]),
                               statistics.fmean(good) if good else math.nan, len(good), len(part)))
        out.append(Sweep(name, model, task, metric, metric != "accuracy_%", found))
    return out


def _fmt(value: float, metric: str) -> str:
    if math.isnan(value):
        return DASH
    return f"{value:.1f}" if metric == "accuracy_%" else f"{value:.4f}"


def frame(found: list[Sweep]) -> pd.DataFrame:
    """One row per sweep: best, median and worst score over the grid, the best point, the warning."""
    rows = []
    for s in found:
        ranked = s.ranked()
        scores = [p.score for p in ranked]
        rows.append({
            "sweep": s.sweep, "model": s.model, "task": s.task,
            "metric": "accuracy_%" if s.metric == "accuracy_%" else "train_loss_last (lower is better)",
            "points": len(s.points), "points_scored": len(ranked),
            "best": scores[0] if scores else math.nan,
            "median": statistics.median(scores) if scores else math.nan,
            "worst": scores[-1] if scores else math.nan,
            "best_at": _label(ranked[0].point) if ranked else "",
            "grid": "; ".join(f"{k}: {', '.join(str(v) for v in dict.fromkeys(p.point[k] for p in s.points))}"
                              for k in s.points[0].point),
            "warning": s.edge_warning(),
        })
    return pd.DataFrame(rows)


def points_csv(data: RunData) -> str:
    """Every grid point's score, for a plot of score against the swept value."""
    rows = [{"sweep": s.sweep, "model": s.model, "task": s.task, "variant": p.variant, **p.point,
             s.metric: p.score, "seeds_ok": p.seeds_ok, "seeds": p.seeds}
            for s in sweeps(data) for p in s.points]
    return pd.DataFrame(rows).to_csv(index=False, float_format="%.6g") if rows else ""


def table(found: list[Sweep]) -> Table:
    f = frame(found)
    shown = pd.DataFrame({
        "Sweep": [f"{s} ({m}, {t})" for s, m, t in zip(f["sweep"], f["model"], f["task"])],
        "Grid": f["grid"],
        "Scored by": ["accuracy (%)" if m == "accuracy_%" else "last train loss (lower is better)"
                      for m in f["metric"]],
        "Best": [_fmt(v, m) for v, m in zip(f["best"], f["metric"])],
        "Best at": f["best_at"],
        "Median": [_fmt(v, m) for v, m in zip(f["median"], f["metric"])],
        "Worst": [_fmt(v, m) for v, m in zip(f["worst"], f["metric"])],
        "Points": [f"{a}/{b}" for a, b in zip(f["points_scored"], f["points"])],
        "Warning": [w or DASH for w in f["warning"]],
    })
    return Table(shown, sortable=False)
