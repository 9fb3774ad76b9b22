"""`bench report RUN_DIR`: tables, charts and one HTML page from a run's result files.

Reads RUN_DIR/results.jsonl and RUN_DIR/env.json only (never torch or the methods), and writes
into RUN_DIR/report/. Works on partial runs, on runs where every cell failed and on records
missing optional fields: what cannot be drawn is skipped and the report says so.

data (records -> cells and seed groups) -> charts and tables -> sections (what the report says,
once) -> markdown and html (how it looks in each format).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from bench.errors import ConfigError, ResultsFileError, did_you_mean
from bench.report import html, markdown, tables
from bench.report.charts import CAPTIONS, draw
from bench.report.data import load
from bench.report.ladder import ladders_csv
from bench.report.sections import describe
from bench.report.sweeps import points_csv

__all__ = ["CAPTIONS", "FORMATS", "REPORT_DIR", "render"]

FORMATS = ("md", "csv", "tex", "html", "png", "svg", "pdf")
REPORT_DIR = "report"


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


def render(run_dir: Path, formats: Sequence[str] = FORMATS) -> Path:
    """Write the report files asked for into RUN_DIR/report/ and return that folder.

    md: report.md; csv: results.csv (one row per cell), groups.csv (seed groups), ladders.csv
    (one row per rung of each recipe ladder, where the run has ladders) and sweeps.csv (one row per
    grid point of each sweep, where it has sweeps); tex: table.tex;
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
    doc = describe(data, draw(data, out, formats))
    if "csv" in formats:
        (out / "results.csv").write_text(tables.cells_csv(data), encoding="utf-8")
        (out / "groups.csv").write_text(tables.groups_csv(data), encoding="utf-8")
        for name, rows in (("ladders.csv", ladders_csv(data)), ("sweeps.csv", points_csv(data))):
            if rows:
                (out / name).write_text(rows, encoding="utf-8")
            else:  # a stale one from an earlier render would contradict this report
                (out / name).unlink(missing_ok=True)
    if "tex" in formats:
        (out / "table.tex").write_text(tables.latex(data), encoding="utf-8")
    if "md" in formats:
        (out / "report.md").write_text(markdown.render(doc), encoding="utf-8")
    if "html" in formats:
        (out / "report.html").write_text(html.render(doc), encoding="utf-8")
    return out
