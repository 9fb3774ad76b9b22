"""Sweeps: a method row with `sweep = { lr = [...] }` runs one cell per grid point (bench/config.py).
Per sweep, model and task, the points are ranked on validation accuracy (the records'
`quality.validation_accuracy`, seeds averaged) and the best is the sweep's chosen point: the only
one the summary, the charts and the cell table show, with its test accuracy. Test accuracy is
reported beside every point here, never ranked on; a sweep whose points have no validation
accuracy has no chosen point (nothing else stands in for it) and says why. A warning says when
the chosen point sits on an edge of a numeric axis of the grid (the optimum may lie beyond it)."""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd

from bench.report.document import Table

DASH = "–"
RANKED_ON = "validation_accuracy_%"  # the one column a sweep's points are ranked on
CHOSEN_ON = "validation accuracy"  # the same, in words, for the report


def _mean(values: list[float]) -> float:
    xs = [v for v in values if not math.isnan(v)]
    return statistics.fmean(xs) if xs else math.nan


@dataclass
class Point:
    point: dict[str, Any]
    variant: str
    validation: float  # validation accuracy (%), seeds averaged over ok cells; NaN when none has one
    test: float  # test accuracy (%), seeds averaged: reported beside the point, never ranked on
    train_loss_last: float
    seeds_ok: int  # ok cells with a validation accuracy
    seeds: int
    finished: int  # ok cells
    rows: list[int] = field(default_factory=list)  # the point's cells: their rows in the run's cells


@dataclass
class Sweep:
    sweep: str
    model: str
    task: str
    points: list[Point]
    note: str = ""  # why no point has a validation accuracy, as the records say it

    def ranked(self) -> list[Point]:
        """The points with a validation accuracy, best first (ties keep grid order)."""
        return sorted((p for p in self.points if not math.isnan(p.validation)), key=lambda p: -p.validation)

    @property
    def chosen(self) -> Point | None:
        """The point the report shows for this sweep: the best on validation; None without one."""
        ranked = self.ranked()
        return ranked[0] if ranked else None

    def why_none(self) -> str:
        """Why no point is chosen ("" when one is)."""
        if self.chosen is not None:
            return ""
        if not any(p.finished for p in self.points):
            return "no point chosen: no cell of the sweep finished"
        reason = self.note or "no cell recorded a validation accuracy (records from before it was recorded?)"
        return f"no point chosen: {reason}; test accuracy is never used to choose"

    def edge_warning(self) -> str:
        """Where the chosen point sits on the edge of a numeric axis with 2+ values: which, and which way."""
        if self.chosen is None:
            return ""
        best, notes = self.chosen.point, []
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


def from_cells(c: pd.DataFrame) -> list[Sweep]:
    """The sweeps of a run's cells (bench/report/data.py's `cells`), each point seeds averaged."""
    if "sweep" not in c or not (c["sweep"] != "").any():
        return []
    by_key: dict[tuple[str, str, str], dict[str, list[int]]] = {}
    for i, row in c.iterrows():
        if row["sweep"]:
            by_key.setdefault((row["sweep"], row["model"], row["task"]), {}).setdefault(row["sweep_point"], []).append(i)
    out = []
    for (name, model, task), points in by_key.items():
        found = []
        for point, idx in points.items():
            part = c.loc[idx]
            ok = part[part["status"] == "ok"]
            found.append(Point(json.loads(point), str(part.iloc[0]["variant"]), _mean(ok[RANKED_ON].tolist()),
                               _mean(ok["accuracy_%"].tolist()), _mean(ok["train_loss_last"].tolist()),
                               int(ok[RANKED_ON].notna().sum()), len(part), len(ok), list(idx)))
        rows = c.loc[[i for idx in points.values() for i in idx]]
        notes = [n for n in rows[rows["status"] == "ok"]["validation_note"] if n]
        out.append(Sweep(name, model, task, found, notes[0] if notes else ""))
    return out


class Run(Protocol):
    """What the renderers pass in: a loaded run (bench/report/data.py's RunData, which reads the
    sweeps as it loads, so this module does not import it)."""

    sweeps: list[Sweep]


def sweeps(data: Run) -> list[Sweep]:
    return data.sweeps


def unchosen_rows(found: list[Sweep]) -> set[int]:
    """The rows of every sweep point but the chosen ones: the cells only the Sweeps section shows."""
    return {i for s in found for p in s.points if p is not s.chosen for i in p.rows}


def _fmt(value: float, places: int = 1) -> str:
    return DASH if math.isnan(value) else f"{value:.{places}f}"


def frame(found: list[Sweep]) -> pd.DataFrame:
    """One row per sweep: best (the chosen point), median and worst validation accuracy over the
    grid, the chosen point and its test accuracy, the grid, the warning, and why none was chosen."""
    rows = []
    for s in found:
        ranked = s.ranked()
        scores = [p.validation for p in ranked]
        chosen = s.chosen
        rows.append({
            "sweep": s.sweep, "model": s.model, "task": s.task, "chosen_on": CHOSEN_ON if chosen else "",
            "points": len(s.points), "points_scored": len(ranked),
            "best": scores[0] if scores else math.nan,
            "median": statistics.median(scores) if scores else math.nan,
            "worst": scores[-1] if scores else math.nan,
            "best_at": _label(chosen.point) if chosen else "",
            "chosen_test": chosen.test if chosen else math.nan,
            "grid": "; ".join(f"{k}: {', '.join(str(v) for v in dict.fromkeys(p.point[k] for p in s.points))}"
                              for k in s.points[0].point),
            "warning": s.edge_warning(), "note": s.why_none(),
        })
    return pd.DataFrame(rows)


def points_frame(found: list[Sweep]) -> pd.DataFrame:
    """Every grid point of every sweep: validation and test accuracy, last training loss, which is chosen."""
    rows = [{"sweep": s.sweep, "model": s.model, "task": s.task, "variant": p.variant, "point": _label(p.point),
             "values": p.point, "validation_accuracy_%": p.validation, "accuracy_%": p.test,
             "train_loss_last": p.train_loss_last, "chosen": p is s.chosen, "seeds_ok": p.seeds_ok, "seeds": p.seeds}
            for s in found for p in s.points]
    return pd.DataFrame(rows)


def points_csv(data: Run) -> str:
    """Every grid point's scores, for a plot of score against the swept value."""
    f = points_frame(sweeps(data))
    if f.empty:
        return ""
    values = pd.DataFrame(list(f["values"]), index=f.index)
    out = pd.concat([f[["sweep", "model", "task", "variant"]], values,
                     f[["validation_accuracy_%", "accuracy_%", "train_loss_last", "chosen", "seeds_ok", "seeds"]]],
                    axis=1)
    return out.to_csv(index=False, float_format="%.6g")


def table(found: list[Sweep]) -> Table:
    """One row per sweep (the choice, on validation accuracy)."""
    f = frame(found)
    shown = pd.DataFrame({
        "Sweep": [f"{s} ({m}, {t})" for s, m, t in zip(f["sweep"], f["model"], f["task"])],
        "Grid": f["grid"],
        "Chosen on": [on or DASH for on in f["chosen_on"]],
        "Chosen point": [at or note for at, note in zip(f["best_at"], f["note"])],
        "Validation: best (%)": [_fmt(v) for v in f["best"]],
        "median": [_fmt(v) for v in f["median"]],
        "worst": [_fmt(v) for v in f["worst"]],
        "Test of the chosen (%)": [_fmt(v) for v in f["chosen_test"]],
        "Points": [f"{a}/{b}" for a, b in zip(f["points_scored"], f["points"])],
        "Warning": [w or DASH for w in f["warning"]],
    })
    return Table(shown, sortable=False)


def points_table(found: list[Sweep]) -> Table:
    """Every point of every sweep, in grid order, the chosen one marked (and in bold)."""
    f = points_frame(found)
    shown = pd.DataFrame({
        "Sweep": [f"{s} ({m}, {t})" for s, m, t in zip(f["sweep"], f["model"], f["task"])],
        "Point": f["point"],
        "Validation (%)": [_fmt(v) for v in f["validation_accuracy_%"]],
        "Test (%)": [_fmt(v) for v in f["accuracy_%"]],
        "Last train loss": [_fmt(v, 4) for v in f["train_loss_last"]],
        "Seeds": [f"{a}/{b}" for a, b in zip(f["seeds_ok"], f["seeds"])],
        "Chosen": ["chosen" if c else "" for c in f["chosen"]],
    })
    bold = pd.DataFrame(False, index=shown.index, columns=shown.columns)
    bold.loc[f["chosen"].astype(bool), ["Point", "Validation (%)", "Chosen"]] = True
    return Table(shown, bold, sortable=False)
