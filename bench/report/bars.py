"""The bar charts: one row per seed group (seeds averaged), coloured by method, for peak memory,
step time and throughput, and accuracy. A group whose every cell failed keeps its row with the
failure written in, so a failure never looks like a missing bar. A builder returns None when
there is nothing to draw."""
from __future__ import annotations

import math
import statistics
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.transforms import blended_transform_factory

from bench.report.data import RunData
from bench.report.groups import Group, mean_ci
from bench.report.style import GIB_LABEL, GREY, new_figure, tint, wrap
from bench.results.peaks import headline_peak, managed_bytes
from bench.results.record import Record
from bench.results.values import GIB, num, samples

MANAGED = "optimizer state, paged (managed memory)"
PLAIN = "peak (no breakdown recorded)"
# Stacked memory parts in stacking order: label -> (tint towards white, hatch).
PARTS = {
    "parameters": (0.0, ""),
    "quantization constants": (0.3, "xxxx"),
    "gradients": (0.35, ""),
    "optimizer state": (0.55, "////"),
    "activations": (0.75, ""),
    "other": (0.85, "---"),
    MANAGED: (1.0, "\\\\\\\\"),
    PLAIN: (0.0, ""),
}


def _mean(values: list[float]) -> float:
    xs = [v for v in values if not math.isnan(v)]
    return statistics.fmean(xs) if xs else math.nan


def _parts(rec: Record) -> dict[str, float]:
    """Memory parts of one record in bytes: the breakdown where recorded, else the plain peak."""
    b = rec.memory.breakdown
    split = {"parameters": num(b.parameters_bytes), "gradients": num(b.gradients_bytes),
             "optimizer state": num(b.optimizer_bytes), "activations": num(b.activations_bytes),
             "other": num(b.other_bytes)}
    out: dict[str, float] = {}
    if any(not math.isnan(v) for v in split.values()):
        constants = num(rec.memory.weights.quant_constants_bytes)
        # The constants are part of the parameters: shown apart.
        split["quantization constants"] = 0.0 if math.isnan(constants) else constants
        split["parameters"] -= split["quantization constants"]
        out = {label: v for label, v in split.items() if not math.isnan(v) and v > 0}
    else:
        value = headline_peak(rec).bytes - managed_bytes(rec)  # the managed state gets its own segment below
        if not math.isnan(value):
            out[PLAIN] = value
    if out and managed_bytes(rec):
        out[MANAGED] = managed_bytes(rec)
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


def _marks(ax: Any, g: Group, y: int, left: float, used: dict[str, None]) -> None:
    """The predicted peak (dashed) and the NVML device peak (diamond) of a group's bar."""
    predicted = _mean([num(r.memory.predicted.peak_bytes) for r in g.ok]) / GIB
    if not math.isnan(predicted):
        ax.plot([predicted, predicted], [y - 0.42, y + 0.42], color="black", linewidth=1.2, linestyle="--")
        used["predicted"] = None
    nvml = _mean([num(r.memory.nvml_device_peak_bytes) for r in g.ok]) / GIB
    if not math.isnan(nvml):
        ax.plot([nvml], [y], marker="D", color="black", markersize=4, linestyle="none")
        ax.plot([left, nvml], [y, y], color="black", linewidth=0.5, linestyle=":")
        used["nvml"] = None


def _memory_legend(ax: Any, methods: list[str], colours: dict[str, str], used: dict[str, None]) -> None:
    handles = [Patch(facecolor=colours[m], edgecolor=colours[m], label=m) for m in dict.fromkeys(methods)]
    if [k for k in used if k in PARTS] == [PLAIN]:  # plain bars only: the method colours say it all
        del used[PLAIN]
    for label, (t, hatch) in PARTS.items():
        if label in used:
            handles.append(Patch(facecolor=tint(GREY, t), hatch=hatch, edgecolor=GREY, label=label))
    if "predicted" in used:
        handles.append(Line2D([], [], color="black", linewidth=1.2, linestyle="--", label="predicted peak"))
    if "nvml" in used:
        handles.append(Line2D([], [], marker="D", color="black", linestyle="none", markersize=4,
                              label="NVML device peak (incl. CUDA context, cache)"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def memory_chart(data: RunData, colours: dict[str, str]) -> Figure | None:
    """Peak training memory per group: stacked breakdown where recorded, NVML device peak marked."""
    groups = data.seed_groups
    parts = [[_parts(r) for r in g.ok] for g in groups]
    if not any(any(p) for p in parts):
        return None
    fig, (ax,) = _bar_axes(groups, 6.5)
    used: dict[str, None] = {}
    failed = []
    for y, (g, recs) in enumerate(zip(groups, parts)):
        if not any(recs):
            failed.append(y)
            continue
        left = 0.0
        for label, (t, hatch) in PARTS.items():
            value = _mean([p.get(label, math.nan) for p in recs]) / GIB
            if math.isnan(value):
                continue
            colour = colours[g.method]
            ax.barh(y, value, left=left, height=0.7, color=tint(colour, t), hatch=hatch,
                    edgecolor=colour, linewidth=0.6)
            left += value
            used[label] = None
        _marks(ax, g, y, left, used)
    _failed_rows(ax, groups, failed)
    ax.set_xlabel(f"Peak training memory, {GIB_LABEL}")
    kinds = {"CUDA: torch peak allocated" if r.cuda else "CPU: peak RSS above pre-load baseline"
             for g in groups for r in g.ok}
    ax.set_title(f"Peak training memory per method ({'; '.join(sorted(kinds))})")
    _memory_legend(ax, [g.method for y, g in enumerate(groups) if y not in failed], colours, used)
    return fig


def _step_ms(g: Group) -> tuple[float, float, float]:
    """(median, lower error, upper error) in ms: pooled per-step samples, else recorded median and IQR."""
    pooled = [x * 1e3 for r in g.ok for x in samples(r.time.step_s)]
    if len(pooled) >= 2:
        q1, q2, q3 = statistics.quantiles(pooled, n=4, method="inclusive")
        return q2, q2 - q1, q3 - q2
    median = _mean([num(r.time.step_s_median) * 1e3 for r in g.ok])
    iqr = _mean([num(r.time.step_s_iqr) * 1e3 for r in g.ok])
    half = 0.0 if math.isnan(iqr) else iqr / 2
    return (pooled[0] if pooled and math.isnan(median) else median), half, half


def speed_chart(data: RunData, colours: dict[str, str]) -> Figure | None:
    """Median step time with IQR bars, and tokens per second, per group."""
    groups = data.seed_groups
    steps = [_step_ms(g) for g in groups]
    tokens = [mean_ci(num(r.time.tokens_per_s) for r in g.ok) for g in groups]
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
    groups = data.seed_groups
    values = [[100 * num(r.quality.accuracy) for r in g.ok] for g in groups]
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
