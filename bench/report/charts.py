"""The report's charts: which there are (file stem, builder, why one may be skipped, caption), and
drawing them into the report folder. A chart with nothing to draw, or one that fails, is skipped
and the report says why; its stale files from an earlier render are removed."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure as MplFigure

from bench.report.bars import accuracy_chart, memory_chart, speed_chart
from bench.report.data import RunData
from bench.report.document import Figure
from bench.report.ladder import ladder_chart
from bench.report.points import energy_chart, loss_chart, pareto_chart
from bench.report.style import CHART_FORMATS, method_colours, save, style, svg_text
from bench.report.target import target_chart


class Chart(NamedTuple):
    stem: str  # file name without suffix
    build: Callable[[RunData, dict[str, str]], MplFigure | None]
    reason: str  # what the report says when the builder has nothing to draw
    caption: str


CHARTS = [
    Chart("memory", memory_chart, "no ok cell recorded a peak memory",
          "Peak training memory per method and variant (seeds averaged). Stacked parts where the run "
          "recorded a breakdown; paged optimizer state in managed memory is added on top, since torch's "
          "counters do not see it. Dashed marks: predicted peak; diamonds: NVML device peak (where recorded)."),
    Chart("accuracy_vs_memory", pareto_chart, "no ok cell recorded both accuracy and peak memory",
          "Test accuracy against peak memory; the dashed line is the Pareto front, chosen on validation accuracy "
          "(no other variant is both smaller and more accurate on the validation split), each point drawn at its "
          "test accuracy; of a sweep, its chosen point only. Bars: 95% CI over seeds."),
    Chart("accuracy_vs_energy", energy_chart, "no ok cell recorded both accuracy and training energy (energy "
          "needs NVML on a GPU or readable RAPL counters on the CPU; each record's energy.note says why not)",
          "Test accuracy against the energy of the timed training steps (NVML or RAPL; each record's energy.scope "
          "says what the counter covers); the dashed line is the Pareto front, chosen on validation accuracy, each "
          "point drawn at its test accuracy. Bars: 95% CI over seeds."),
    Chart("speed", speed_chart, "no ok cell recorded step times or throughput",
          "Median step time with interquartile range (all timed steps of all seeds), and tokens per second."),
    Chart("accuracy", accuracy_chart, "no ok cell recorded an accuracy",
          "Accuracy per variant: mean with 95% t-interval over seeds where there are several; circles "
          "are single seeds."),
    Chart("ladder", ladder_chart, "no ladder in this run (method rows with a `ladder` name)",
          "Recipe ladders: each rung adds one technique to the rung above (the table says which); peak "
          "training memory and real (non-padding) tokens per second, seeds averaged."),
    Chart("target", target_chart, "no cell measured time to a target (settings target_accuracy)",
          "Validation accuracy against training time on the way to the target (dashed); a star marks where "
          "a cell first reached it. Evaluations and compilation are not in the time."),
    Chart("loss", loss_chart, "no cell recorded per-step training losses",
          "Training loss at every step, warm-up included; a cross marks where a failed cell stopped."),
]
CAPTIONS = {chart.stem: chart.caption for chart in CHARTS}


@dataclass
class Skipped:
    stem: str
    reason: str


def _build(chart: Chart, data: RunData, colours: dict[str, str]) -> tuple[MplFigure | None, str]:
    """The figure, or None and why not: one odd record must not cost the whole report."""
    try:
        return chart.build(data, colours), chart.reason
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"chart {chart.stem!r} could not be drawn: {exc!r}", stacklevel=3)
        return None, f"could not be drawn: {type(exc).__name__}: {exc}"


def draw(data: RunData, out: Path, formats: Sequence[str]) -> list[Figure | Skipped]:
    """Each chart saved as out/STEM.FMT for the chart formats asked for, and inlined as SVG where
    the HTML page is asked for; nothing when neither is."""
    files = [f for f in formats if f in CHART_FORMATS]
    if not files and "html" not in formats:
        return []
    colours = method_colours(data.cells["method"])
    drawn: list[Figure | Skipped] = []
    for chart in CHARTS:
        with style():  # build *and* save inside: text takes its size when made
            fig, reason = _build(chart, data, colours)
            if fig is None:
                drawn.append(Skipped(chart.stem, reason))
                for fmt in files:  # a stale chart from an earlier render would contradict this report
                    (out / f"{chart.stem}.{fmt}").unlink(missing_ok=True)
                continue
            written = save(fig, out / chart.stem, files)
            svg = svg_text(fig, written.get("svg")) if "html" in formats else None
            plt.close(fig)
        drawn.append(Figure(chart.stem, chart.caption, {fmt: p.name for fmt, p in written.items()}, svg))
    return drawn
