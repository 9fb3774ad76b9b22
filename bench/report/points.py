"""The charts that plot points and lines rather than one bar per group: accuracy against memory with
its Pareto front, and the training-loss curves. Each gets one panel per task (and model), since
accuracies and losses of different tasks share no scale. A builder returns None when there is
nothing to draw.

The points are the seed groups the tables show (of a sweep, only its point chosen on validation),
at their test accuracy; which of them are on the Pareto front is decided on their validation
accuracy (bench/report/data.py's `ranked_on`), as every choice the report makes is."""
from __future__ import annotations

import math
from typing import Any, Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bench.report.cells import name_of
from bench.report.data import RunData, ranked_on
from bench.report.groups import Group
from bench.report.style import GIB_LABEL, GREY, figure_legend, legend_outside, panels, wrap
from bench.results.record import Record
from bench.results.values import samples

LINESTYLES = ["-", "--", ":", "-."]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both lower x (memory) and higher y (accuracy),
    in order of increasing x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    best = -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def front_rows(rows: Any, x: str) -> list[int]:
    """Positions in `rows` (seed groups) of those on the Pareto front of column `x` against the
    column accuracy's best is chosen on (validation accuracy), in order of increasing x; groups
    without a validation accuracy are on no front, and none is without any."""
    on = ranked_on("accuracy_%")
    if on not in rows:
        return []
    scored = [i for i, v in enumerate(rows[on]) if not math.isnan(v)]
    points = [(rows[x].iloc[i], rows[on].iloc[i]) for i in scored]
    return [scored[j] for j in pareto_front(points)]


def _front(ax: Any, rows: Any, colours: dict[str, str], x: str = "peak_mem_GiB",
           xlabel: str = f"Peak training memory, {GIB_LABEL}") -> list[Any]:
    """Points of one task (accuracy against column `x`), the Pareto front through them, and their
    labels (returned, to be placed once the figure's layout is final)."""
    for method, part in rows.groupby("method", sort=False):
        ax.errorbar(part[x], part["accuracy_%"], yerr=part["accuracy_%_ci95"].fillna(0),
                    fmt="o", color=colours[str(method)], markersize=5, capsize=2, linewidth=0.8, label=str(method))
    # Labels start on their point; place_labels moves them off it and apart.
    labels = [ax.text(px, py, wrap(label, 24), fontsize=6, color=GREY, ha="center", va="center")
              for px, py, label in zip(rows[x], rows["accuracy_%"], rows["group"])]
    points = list(zip(rows[x], rows["accuracy_%"]))
    front = [points[i] for i in front_rows(rows, x)]  # chosen on validation, drawn at test accuracy
    if len(front) > 1:
        ax.plot(*zip(*front), color=GREY, linewidth=1, linestyle="--", drawstyle="steps-post",
                label="Pareto front (on validation accuracy)", zorder=0)
    elif front:
        ax.plot(*zip(*front), marker="o", markersize=11, markerfacecolor="none", color=GREY,
                linestyle="none", label="Pareto front (on validation accuracy)")
    else:
        ax.plot([], [], linestyle="none", label="no Pareto front: no validation accuracy")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Test accuracy (%)")
    ax.margins(x=0.15, y=0.12)
    return labels


def place_labels(fig: Figure, ax: Any, labels: list[Any]) -> None:
    """Move point labels off each other and off the markers (adjustText), with a thin leader line
    from each label to its own point, so no label overlaps another or sits by the wrong marker."""
    from adjustText import adjust_text

    if not labels:
        return
    fig.canvas.draw()  # the layout (legend outside, panels) is final: place in its display space
    xs = [t.get_position()[0] for t in labels]
    ys = [t.get_position()[1] for t in labels]
    # Each marker (5 pt) is an obstacle of its own size; the lines drawn (Pareto front, error bars)
    # are obstacles too, so no label lies on them.
    lines = [line for line in ax.get_lines() if len(line.get_xdata()) > 1]
    adjust_text(labels, x=xs, y=ys, ax=ax, objects=lines or None, expand=(1.3, 1.9),
                force_static=(0.6, 1.0), force_text=(0.4, 0.7), min_arrow_len=0,
                arrowprops={"arrowstyle": "-", "color": GREY, "linewidth": 0.5, "shrinkA": 1, "shrinkB": 4})


def pareto_chart(data: RunData, colours: dict[str, str]) -> Figure | None:
    """Accuracy against peak memory per group, with the Pareto front (less memory, more accuracy).
    Accuracies of different tasks are not comparable: each task gets its own panel and front."""
    return _pareto(data, colours, "peak_mem_GiB", f"Peak training memory, {GIB_LABEL}",
                   "Test accuracy against memory (up and left is better; bars: 95% CI over seeds)")


def energy_chart(data: RunData, colours: dict[str, str]) -> Figure | None:
    """Accuracy against the timed training steps' energy per group, with its Pareto front."""
    return _pareto(data, colours, "train_kJ", "Training energy, kJ (timed steps)",
                   "Test accuracy against training energy (up and left is better; bars: 95% CI over seeds)")


def _pareto(data: RunData, colours: dict[str, str], x: str, xlabel: str, title: str) -> Figure | None:
    rows = data.groups.dropna(subset=["accuracy_%", x]) if len(data.groups) else data.groups
    if rows.empty:
        return None
    tasks = list(dict.fromkeys(rows["task"].fillna("")))
    fig, axes = panels([t or "(task not recorded)" for t in tasks], title)
    labels = {task: _front(ax, rows[rows["task"].fillna("") == task], colours, x, xlabel)
              for task, ax in zip(tasks, axes.values())}
    if len(axes) == 1:
        legend_outside(next(iter(axes.values())))
    else:
        figure_legend(fig, axes.values())
    for task, ax in zip(tasks, axes.values()):
        place_labels(fig, ax, labels[task])
    return fig


def _panel_of(rec: Record) -> str:
    return " / ".join(p for p in (name_of(rec.model), name_of(rec.task)) if p) or "(unnamed)"


def _warmup(records: list[Record]) -> Any:
    """The warm-up steps the cells share, or None where they differ."""
    warmups = {(rec.settings or {}).get("warmup_steps") for rec in records}
    return warmups.pop() if len(warmups) == 1 else None


def _curves(ax_of: dict[str, Any], curves: list[tuple[Group, Record, list[float]]],
            colours: dict[str, str]) -> int:
    """Draw each cell's loss; a group's seeds share a line style, cycling within each method of a
    panel. Returns how many groups the legend lists."""
    style_of: dict[str, str] = {}
    per_method: dict[tuple[str, str], int] = {}
    seen: set[str] = set()
    for g, rec, losses in curves:
        panel = _panel_of(rec)
        if g.key not in style_of:
            n = per_method.get((panel, g.method), 0)
            style_of[g.key] = LINESTYLES[n % len(LINESTYLES)]
            per_method[(panel, g.method)] = n + 1
        label = wrap(g.label) if g.key not in seen else None
        seen.add(g.key)
        ax = ax_of[panel]
        ax.plot(range(1, len(losses) + 1), losses, color=colours[g.method], linestyle=style_of[g.key],
                linewidth=1.0, alpha=0.85, label=label)
        if not rec.ok:
            ax.plot([len(losses)], [losses[-1]], marker="x", color=colours[g.method], markersize=6)
    return len(seen)


def loss_chart(data: RunData, colours: dict[str, str]) -> Figure | None:
    """Training loss of every step (warm-up included) of every cell that recorded one; one panel per
    model and task, since their losses live on different scales."""
    curves = [(g, r, samples(r.quality.train_loss)) for g in data.seed_groups for r in g.records]
    curves = [c for c in curves if c[2]]
    if not curves:
        return None
    keys = list(dict.fromkeys(_panel_of(r) for _, r, _ in curves))
    fig, axes = panels(keys, "Training loss of every cell (seeds of a group share a line style)")
    listed = _curves(axes, curves, colours)
    warmup = _warmup([rec for _, rec, _ in curves])
    last = list(axes.values())[-1]
    for ax in axes.values():
        if isinstance(warmup, int) and warmup > 0:  # labelled once, so the legend lists it last
            ax.axvline(warmup + 0.5, color=GREY, linewidth=0.8, linestyle=":",
                       label="end of warm-up" if ax is last else None)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("Step (warm-up included)")
        ax.set_ylabel("Training loss")
    if any(not rec.ok for _, rec, _ in curves):
        last.plot([], [], marker="x", color=GREY, linestyle="none", label="cell failed here")
    if len(axes) == 1:
        legend_outside(last, ncols=1 if listed <= 14 else 2)
    else:
        figure_legend(fig, axes.values())
    return fig
