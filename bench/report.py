"""`bench report RUN_DIR`: tables, charts and one HTML page from a run's result files.

Reads RUN_DIR/results.jsonl and RUN_DIR/env.json only (never torch or the methods), and writes
into RUN_DIR/report/. Works on partial runs, on runs where every cell failed and on records
missing optional fields: what cannot be drawn is skipped and the report says so.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt

from bench import report_html, report_tables
from bench.errors import ConfigError, ResultsFileError, did_you_mean
from bench.report_charts import CHARTS
from bench.report_data import RunData, load
from bench.report_style import CHART_FORMATS, method_colours, save, style, svg_text

FORMATS = ("md", "csv", "tex", "html", "png", "svg", "pdf")
REPORT_DIR = "report"
CAPTIONS = {
    "memory": "Peak training memory per method and variant (seeds averaged). Stacked parts where the run "
              "recorded a breakdown; paged optimizer state in managed memory is added on top, since torch's "
              "counters do not see it. Dashed marks: predicted peak; diamonds: NVML device peak (where recorded).",
    "accuracy_vs_memory": "Accuracy against peak memory; the dashed line is the Pareto front (no other "
                          "variant is both smaller and more accurate). Bars: 95% CI over seeds.",
    "speed": "Median step time with interquartile range (all timed steps of all seeds), and tokens per second.",
    "accuracy": "Accuracy per variant: mean with 95% t-interval over seeds where there are several; circles "
                "are single seeds.",
    "loss": "Training loss at every step, warm-up included; a cross marks where a failed cell stopped.",
}


@dataclass
class _Charts:
    markdown: list[str] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (caption, inline SVG) for the HTML
    skipped: list[str] = field(default_factory=list)


def _check_formats(formats: Sequence[str]) -> list[str]:
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    out = []
    for fmt in formats:
        if fmt not in FORMATS:
            raise ConfigError(f"report format {fmt!r} is not known{did_you_mean(fmt, FORMATS)}")
        out.append(fmt)
    if not out:
        raise ConfigError(f"no report format asked for; valid choices: {', '.join(FORMATS)}")
    return out


def _draw(data: RunData, out: Path, formats: Sequence[str]) -> _Charts:
    files = [f for f in formats if f in CHART_FORMATS]
    result = _Charts()
    if not files and "html" not in formats:
        return result
    colours = method_colours(data.cells["method"])
    for stem, build, reason in CHARTS:
        with style():
            try:
                fig = build(data, colours)
            except Exception as exc:  # noqa: BLE001 (one odd record must not cost the whole report)
                warnings.warn(f"chart {stem!r} could not be drawn: {exc!r}", stacklevel=2)
                fig, reason = None, f"could not be drawn: {type(exc).__name__}: {exc}"
            if fig is None:
                result.skipped.append(f"Chart '{stem}' skipped: {reason}.")
                result.markdown.append(f"- Chart '{stem}' skipped: {reason}.")
                for fmt in files:  # a stale chart from an earlier render would contradict this report
                    (out / f"{stem}.{fmt}").unlink(missing_ok=True)
                continue
            written = save(fig, out / stem, files)
            if "html" in formats:
                result.figures.append((CAPTIONS[stem], svg_text(fig, written.get("svg"))))
            plt.close(fig)
        if written:
            shown = written.get("png") or written.get("svg") or next(iter(written.values()))
            links = ", ".join(f"[{fmt.upper()}]({p.name})" for fmt, p in written.items())
            result.markdown.append(f"![{stem}]({shown.name})\n\n{CAPTIONS[stem]} ({links})\n")
    return result


def _title(data: RunData) -> str:
    matrices = sorted({m for m in data.cells["matrix"] if m})
    return f"Benchmark report: {', '.join(matrices) or data.run_dir.name}"


def render(run_dir: Path, formats: Sequence[str] = FORMATS) -> Path:
    """Write the report files asked for into RUN_DIR/report/ and return that folder.

    md: report.md; csv: results.csv (one row per cell) and groups.csv (seed groups); tex: table.tex;
    html: report.html; png/svg/pdf: one file per chart. Raises ResultsFileError when the results
    cannot be read and ConfigError for an unknown format.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ResultsFileError(f"{run_dir}: no such run folder")
    formats = _check_formats(formats)
    data = load(run_dir)
    out = run_dir / REPORT_DIR
    out.mkdir(exist_ok=True)
    charts = _draw(data, out, formats)
    if "csv" in formats:
        (out / "results.csv").write_text(report_tables.cells_csv(data), encoding="utf-8")
        (out / "groups.csv").write_text(report_tables.groups_csv(data), encoding="utf-8")
    if "tex" in formats:
        (out / "table.tex").write_text(report_tables.latex(data), encoding="utf-8")
    if "md" in formats:
        env = [f"- {k}: {v}" for k, v in report_html.flatten(data.env)]
        body = report_tables.markdown_sections(data, charts.markdown, env)
        (out / "report.md").write_text(f"# {_title(data)}\n\n{body}", encoding="utf-8")
    if "html" in formats:
        page = report_html.page(data, _title(data), charts.figures, charts.skipped)
        (out / "report.html").write_text(page, encoding="utf-8")
    return out
