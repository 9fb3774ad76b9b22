"""The report's charts. Each builder takes the run's data and returns a figure, or None when there is
nothing to draw (the report then says the chart was skipped, and why).

One bar or point per seed group (seeds averaged), coloured by method; groups whose every cell
failed keep their row with the failure written in, so a failure never looks like a missing bar.
"""
from __future__ import annotations

import math
import statistics
import textwrap
from dataclasses import dataclass
from typing import Any, Callable

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import blended_transform_factory

from bench.report_data import (GIB, RunData, get, group_key, managed_bytes, mean_ci, name_of, num, pareto_front,
                               peak_bytes, samples)
from bench.report_style import figure_legend, legend_outside, new_figure, panels, tint

GIB_LABEL = "GiB (1 GiB = 2$^{30}$ bytes)"
GREY = "#555555"
# Stacked memory parts: (label, breakdown field, tint towards white, hatch).
PARTS = [
    ("parameters", "parameters_bytes", 0.0, ""),
    ("quantization constants", None, 0.3, "xxxx"),
    ("gradients", "gradients_bytes", 0.35, ""),
    ("optimizer state", "optimizer_bytes", 0.55, "////"),
    ("activations", "activations_bytes", 0.75, ""),
    ("other", "other_bytes", 0.85, "---"),
]
MANAGED = ("optimizer state, paged (managed memory)", 1.0, "\\\\\\\\")
PLAIN = ("peak (no breakdown recorded)", 0.0, "")
LINESTYLES = ["-", "--", ":", "-."]


@dataclass
class Group:
    key: str
    label: str
    method: str
    records: list[dict[str, Any]]

    @property
    def ok(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"] == "ok"]

    @property
    def status(self) -> str:
        return ", ".join(dict.fromkeys(r["status"] for r in self.records))


def groups_of(data: RunData) -> list[Group]:
    out: dict[str, Group] = {}
    for rec in data.records:
        key = group_key(rec)
        if key not in out:
            out[key] = Group(key, data.labels[key], str(rec.get("method") or ""), [])
        out[key].records.append(rec)
    return list(out.values())


def wrap(label: str, width: int = 36) -> str:
    """Long labels over several lines, so they never squeeze the plot away."""
    return textwrap.fill(label, width, break_on_hyphens=False)


def _mean(values: list[float]) -> float:
    xs = [v for v in values if not math.isnan(v)]
    return statistics.fmean(xs) if xs else math.nan


def _parts(rec: dict[str, Any]) -> dict[str, float]:
    """Memory parts of one record in bytes: the breakdown where recorded, else the plain peak."""
    breakdown = get(rec, "memory.breakdown")
    out: dict[str, float] = {}
    if isinstance(breakdown, dict) and any(not math.isnan(num(v)) for v in breakdown.values()):
        constants = num(get(rec, "memory.weights.quant_constants_bytes"))
        constants = 0.0 if math.isnan(constants) else constants
        for label, field, _, _ in PARTS:
            value = constants if field is None else num(breakdown.get(field))
            if field == "parameters_bytes":  # the constants are part of the parameters: show them apart
                value -= constants
            if not math.isnan(value) and value > 0:
                out[label] = value
    else:
        value = peak_bytes(rec)[0] - managed_bytes(rec)  # the managed state gets its own segment below
        if not math.isnan(value):
            out[PLAIN[0]] = value
    if out and managed_bytes(rec):
        out[MANAGED[0]] = managed_bytes(rec)
    return out


def _failed_rows(ax: Any, groups: list[Group], rows: list[int]) -> None:
    for y in rows:
        text = "not recorded" if groups[y].ok else groups[y].status
        ax.text(0.01, y, text, transform=blended_transform_factory(ax.transAxes, ax.transData),
                va="center", ha="left", color=GREY, style="italic", fontsize=7)


def _bar_axes(groups: list[Group], width: float, ncols: int = 1) -> tuple[Figure, list[Any]]:
    labels = [wrap(g.label) for g in groups]
    row_in = max(0.3, 0.14 * (1 + max(label.count("\n") + 1 for label in labels)))
    fig, axes = new_figure(width, 0.9 + row_in * len(groups), ncols, sharey=True)
    axes[0].set_yticks(range(len(groups)), labels)
    axes[0].set_ylim(len(groups) - 0.5, -0.5)  # first group on top
    for ax in axes:
        ax.grid(axis="y", visible=False)
    return fig, axes


def memory_chart(data: RunData, colours: dict[str, str]) -> Figure | None:
    """Peak training memory per group: stacked breakdown where recorded, NVML device peak marked."""
    groups = groups_of(data)
    parts = [[_parts(r) for r in g.ok] for g in groups]
    if not any(any(p) for p in parts):
        return None
    fig, (ax,) = _bar_axes(groups, 6.5)
    styles = {label: (t, h) for label, _, t, h in PARTS} | {MANAGED[0]: MANAGED[1:], PLAIN[0]: PLAIN[1:]}
    used: dict[str, None] = {}
    failed = []
    for y, (g, recs) in enumerate(zip(groups, parts)):
        if not any(recs):
            failed.append(y)
            continue
        left = 0.0
        for label in styles:
            value = _mean([p.get(label, math.nan) for p in recs]) / GIB
            if math.isnan(value):
                continue
            t, hatch = styles[label]
            colour = colours[g.method]
            ax.barh(y, value, left=left, height=0.7, color=tint(colour, t), hatch=hatch,
                    edgecolor=colour, linewidth=0.6)
            left += value
            used[label] = None
        predicted = _mean([num(get(r, "memory.predicted.peak_bytes")) for r in g.ok]) / GIB
        if not math.isnan(predicted):
            ax.plot([predicted, predicted], [y - 0.42, y + 0.42], color="black", linewidth=1.2, linestyle="--")
            used["predicted"] = None
        nvml = _mean([num(get(r, "memory.nvml_device_peak_bytes")) for r in g.ok]) / GIB
        if not math.isnan(nvml):
            ax.plot([nvml], [y], marker="D", color="black", markersize=4, linestyle="none")
            ax.plot([left, nvml], [y, y], color="black", linewidth=0.5, linestyle=":")
            used["nvml"] = None
    _failed_rows(ax, groups, failed)
    ax.set_xlabel(f"Peak training memory, {GIB_LABEL}")
    kinds = {"CUDA: torch peak allocated" if get(r, "device.kind") == "cuda" else "CPU: peak RSS above pre-load baseline"
             for g in groups for r in g.ok}
    ax.set_title(f"Peak training memory per method ({'; '.join(sorted(kinds))})")
    drawn = [g.method for y, g in enumerate(groups) if y not in failed]
    handles = [Patch(facecolor=colours[m], edgecolor=colours[m], label=m) for m in dict.fromkeys(drawn)]
    if [k for k in used if k in styles] == [PLAIN[0]]:  # plain bars only: the method colours say it all
        del used[PLAIN[0]]
    for label in styles:
        if label in used:
            t, hatch = styles[label]
            handles.append(Patch(facecolor=tint(GREY, t), hatch=hatch, edgecolor=GREY, label=label))
    if "predicted" in used:
        handles.append(Line2D([], [], color="black", linewidth=1.2, linestyle="--", label="predicted peak"))
    if "nvml" in used:
        handles.append(Line2D([], [], marker="D", color="black", linestyle="none", markersize=4,
                              label="NVML device peak (incl. CUDA context, cache)"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def _front(ax: Any, rows: Any, colours: dict[str, str]) -> list[Any]:
    """Points of one task, the Pareto front through them, and their labels (returned, to be placed
    once the figure's layout is final)."""
    for method, part in rows.groupby("method", sort=False):
        ax.errorbar(part["peak_mem_GiB"], part["accuracy_%"], yerr=part["accuracy_%_ci95"].fillna(0),
                    fmt="o", color=colours[str(method)], markersize=5, capsize=2, linewidth=0.8, label=str(method))
    # Labels start on their point; place_labels moves them off it and apart.
    labels = [ax.text(x, y, wrap(label, 24), fontsize=6, color=GREY, ha="center", va="center")
              for x, y, label in zip(rows["peak_mem_GiB"], rows["accuracy_%"], rows["group"])]
    points = list(zip(rows["peak_mem_GiB"], rows["accuracy_%"]))
    front = [points[i] for i in pareto_front(points)]
    if len(front) > 1:
        ax.plot(*zip(*front), color=GREY, linewidth=1, linestyle="--", drawstyle="steps-post",
                label="Pareto front", zorder=0)
    else:
        ax.plot(*zip(*front), marker="o", markersize=11, markerfacecolor="none", color=GREY,
                linestyle="none", label="Pareto front")
    ax.set_xlabel(f"Peak training memory, {GIB_LABEL}")
    ax.set_ylabel("Accuracy (%)")
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
    rows = data.groups.dropna(subset=["accuracy_%", "peak_mem_GiB"]) if len(data.groups) else data.groups
    if rows.empty:
        return None
    tasks = list(dict.fromkeys(rows["task"].fillna("")))
    title = "Accuracy against memory (up and left is better; bars: 95% CI over seeds)"
    fig, axes = panels([t or "(task not recorded)" for t in tasks], title)
    labels = {task: _front(ax, rows[rows["task"].fillna("") == task], colours) for task, ax in zip(tasks, axes.values())}
    if len(axes) == 1:
        legend_outside(next(iter(axes.values())))
    else:
        figure_legend(fig, axes.values())
    for task, ax in zip(tasks, axes.values()):
        place_labels(fig, ax, labels[task])
    return fig


def _step_ms(g: Group) -> tuple[float, float, float]:
    """(median, lower error, upper error) in ms: pooled per-step samples, else recorded median and IQR."""
    pooled = [x * 1e3 for r in g.ok for x in samples(get(r, "time.step_s"))]
    if len(pooled) >= 2:
        q1, q2, q3 = statistics.quantiles(pooled, n=4, method="inclusive")
        return q2, q2 - q1, q3 - q2
    median = _mean([num(get(r, "time.step_s_median")) * 1e3 for r in g.ok])
    iqr = _mean([num(get(r, "time.step_s_iqr")) * 1e3 for r in g.ok])
    half = 0.0 if math.isnan(iqr) else iqr / 2
    return (pooled[0] if pooled and math.isnan(median) else median), half, half


def speed_chart(data: RunData, colours: dict[str, str]) -> Figure | None:
    """Median step time with IQR bars, and tokens per second, per group."""
    groups = groups_of(data)
    steps = [_step_ms(g) for g in groups]
    tokens = [mean_ci(num(get(r, "time.tokens_per_s")) for r in g.ok) for g in groups]
    if all(math.isnan(s[0]) for s in steps) and all(math.isnan(t[0]) for t in tokens):
        return None
    fig, (ax_t, ax_k) = _bar_axes(groups, 7.0, ncols=2)
    failed = []
    for y, (g, (med, lo, hi), (tok, half, _)) in enumerate(zip(groups, steps, tokens)):
        colour = colours[g.method]
        if math.isnan(med) and math.isnan(tok):
            failed.append(y)
        if not math.isnan(med):
            ax_t.barh(y, med, height=0.7, color=colour, xerr=[[lo], [hi]], capsize=2,
                      error_kw={"elinewidth": 0.8, "ecolor": "black"})
        if not math.isnan(tok):
            ax_k.barh(y, tok, height=0.7, color=colour, xerr=0 if math.isnan(half) else half, capsize=2,
                      error_kw={"elinewidth": 0.8, "ecolor": "black"})
    _failed_rows(ax_t, groups, failed)
    ax_t.set_xlabel("Step time (ms), median; bars: IQR")
    ax_k.set_xlabel("Throughput (tokens/s); bars: 95% CI over seeds")
    ax_t.set_title("Step time (lower is better)")
    ax_k.set_title("Throughput (higher is better)")
    return fig


def accuracy_chart(data: RunData, colours: dict[str, str]) -> Figure | None:
    """Mean accuracy per group with the 95% t interval over seeds, and each seed's value."""
    groups = groups_of(data)
    values = [[100 * num(get(r, "quality.accuracy")) for r in g.ok] for g in groups]
    values = [[v for v in vs if not math.isnan(v)] for vs in values]
    if not any(values):
        return None
    fig, (ax,) = _bar_axes(groups, 6.0)
    failed = []
    for y, (g, vs) in enumerate(zip(groups, values)):
        if not vs:
            failed.append(y)
            continue
        mean, half, n = mean_ci(vs)
        colour = colours[g.method]
        ax.scatter(vs, [y] * len(vs), s=10, facecolors="none", edgecolors=colour, linewidths=0.7, zorder=2)
        ax.errorbar([mean], [y], xerr=None if math.isnan(half) else [[half], [half]], fmt="D", color=colour,
                    markersize=5, capsize=3, linewidth=1.2, zorder=3)
        ax.annotate(f"n={n}", (mean, y), xytext=(0, 6), textcoords="offset points", ha="center",
                    fontsize=6, color=GREY)
    ax.set_xlim(auto=True)
    _failed_rows(ax, groups, failed)
    ax.set_xlabel("Accuracy (%): mean (diamond) with 95% CI (t distribution) where n > 1; circles: seeds")
    ax.set_title("Accuracy over seeds")
    ax.margins(x=0.1)
    return fig


def loss_chart(data: RunData, colours: dict[str, str]) -> Figure | None:
    """Training loss of every step (warm-up included) of every cell that recorded one; one panel per
    model and task, since their losses live on different scales."""
    curves = [(g, r, samples(get(r, "quality.train_loss"))) for g in groups_of(data) for r in g.records]
    curves = [c for c in curves if c[2]]
    if not curves:
        return None
    def panel_of(rec: dict[str, Any]) -> str:
        return " / ".join(p for p in (name_of(rec.get("model")), name_of(rec.get("task"))) if p) or "(unnamed)"
    keys = list(dict.fromkeys(panel_of(r) for _, r, _ in curves))
    fig, axes = panels(keys, "Training loss of every cell (seeds of a group share a line style)")
    style_of: dict[str, str] = {}  # group -> line style, cycling within each method of a panel
    per_method: dict[tuple[str, str], int] = {}
    seen: set[str] = set()
    for g, rec, losses in curves:
        ax = axes[panel_of(rec)]
        if g.key not in style_of:
            n = per_method.get((panel_of(rec), g.method), 0)
            style_of[g.key] = LINESTYLES[n % len(LINESTYLES)]
            per_method[(panel_of(rec), g.method)] = n + 1
        label = wrap(g.label) if g.key not in seen else None
        seen.add(g.key)
        ax.plot(range(1, len(losses) + 1), losses, color=colours[g.method], linestyle=style_of[g.key],
                linewidth=1.0, alpha=0.85, label=label)
        if rec["status"] != "ok":
            ax.plot([len(losses)], [losses[-1]], marker="x", color=colours[g.method], markersize=6)
    warmups = {get(rec, "settings.warmup_steps") for _, rec, _ in curves}
    warmup = warmups.pop() if len(warmups) == 1 else None
    last = list(axes.values())[-1]
    for ax in axes.values():
        if isinstance(warmup, int) and warmup > 0:  # labelled once, so the legend lists it last
            ax.axvline(warmup + 0.5, color=GREY, linewidth=0.8, linestyle=":",
                       label="end of warm-up" if ax is last else None)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("Step (warm-up included)")
        ax.set_ylabel("Training loss")
    if any(rec["status"] != "ok" for _, rec, _ in curves):
        last.plot([], [], marker="x", color=GREY, linestyle="none", label="cell failed here")
    if len(axes) == 1:
        legend_outside(last, ncols=1 if len(seen) <= 14 else 2)
    else:
        figure_legend(fig, axes.values())
    return fig


# File stem, builder, and what the report says when there is nothing to draw.
CHARTS: list[tuple[str, Callable[[RunData, dict[str, str]], Figure | None], str]] = [
    ("memory", memory_chart, "no ok cell recorded a peak memory"),
    ("accuracy_vs_memory", pareto_chart, "no ok cell recorded both accuracy and peak memory"),
    ("speed", speed_chart, "no ok cell recorded step times or throughput"),
    ("accuracy", accuracy_chart, "no ok cell recorded an accuracy"),
    ("loss", loss_chart, "no cell recorded per-step training losses"),
]
