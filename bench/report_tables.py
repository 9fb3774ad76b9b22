"""Tables of a run: CSV (every field, one row per cell or seed group), Markdown and LaTeX (the
columns worth reading, best value per column in bold, mean ± 95% CI over seeds)."""
from __future__ import annotations

import math
import re
from typing import Sequence

import pandas as pd

from bench.report_data import DEFINITIONS, GROUP_METRICS, UNITS_NOTE, RunData, versions_line

# Summary columns: (header, source metric, decimals). Lower-is-better comes from GROUP_METRICS.
SUMMARY = [
    ("Peak memory (GiB)", "peak_mem_GiB", 3),
    ("NVML device peak (GiB)", "nvml_device_peak_GiB", 3),
    ("Step time (ms)", "step_ms_median", 1),
    ("Throughput (tokens/s)", "tokens_per_s", 0),
    ("Accuracy (%)", "accuracy_%", 1),
]
# Per-cell columns for Markdown: (header, column, decimals, lower is better or None for no bold).
CELLS = [
    ("Peak mem. (GiB)", "peak_mem_GiB", 3, True),
    ("NVML peak (GiB)", "nvml_device_peak_GiB", 3, True),
    ("Predicted peak (GiB)", "predicted_peak_GiB", 3, None),
    ("Predicted vs measured (%)", "predicted_vs_measured_%", 1, None),
    ("Step (ms, median)", "step_ms_median", 1, True),
    ("Step IQR (ms)", "step_ms_iqr", 1, None),
    ("Step CV (%)", "step_cv_%", 1, True),
    ("Tokens/s", "tokens_per_s", 0, False),
    ("Accuracy (%)", "accuracy_%", 1, False),
    ("MFU (%)", "mfu_%", 1, False),
    ("Trainable (%)", "trainable_%", 2, None),
]
# Decimals of the CSV columns (others are written as they are).
CSV_DECIMALS = {"_ci95": 4, "_GiB": 4, "_MiB": 3, "_ms_median": 3, "_ms_iqr": 3, "_%": 3, "tokens_per_s": 1, "_s": 3}
INT_COLUMNS = ("seed", "batch_size", "seq_len", "steps", "failed_step", "trainable_params", "total_params",
               "eval_examples", "flops_per_step", "seeds")
DASH = "–"


def _rounded(df: pd.DataFrame) -> pd.DataFrame:
    """Display precision for the CSV: units' decimals, and counts as integers (not 4.0)."""
    out = df.copy()
    for col in INT_COLUMNS:
        if col in out:
            out[col] = out[col].round().astype("Int64")
    for col in out.columns:
        for suffix, places in CSV_DECIMALS.items():
            if str(col).endswith(suffix) and pd.api.types.is_float_dtype(out[col]):
                out[col] = out[col].round(places)
                break
    return out


def cells_csv(data: RunData) -> str:
    """Every cell with every field (the same columns on every run, empty where absent)."""
    return _rounded(data.cells).to_csv(index=False)


def groups_csv(data: RunData) -> str:
    """Seed groups: mean, 95% CI half-width and n for each summarised metric."""
    return _rounded(data.groups.drop(columns=["key"], errors="ignore")).to_csv(index=False)


def best_mask(values: pd.Series, lower_is_better: bool) -> pd.Series:
    """True where a value ties the best of the column; all False unless at least two values differ."""
    present = values.dropna()
    if len(present) < 2 or present.nunique() == 1:  # nothing to tell apart
        return pd.Series(False, index=values.index)
    best = present.min() if lower_is_better else present.max()
    return values.apply(lambda v: not math.isnan(v) and math.isclose(v, best, rel_tol=1e-9, abs_tol=1e-12))


def _fmt(value: float, places: int) -> str:
    return DASH if math.isnan(value) else f"{value:,.{places}f}"


def _mean_ci(mean: float, half: float, places: int, pm: str) -> str:
    if math.isnan(mean):
        return DASH
    return _fmt(mean, places) if math.isnan(half) else f"{_fmt(mean, places)}{pm}{_fmt(half, places)}"


def summary_frame(data: RunData, pm: str = " ± ") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(display strings, bold mask) of the seed-group summary; metric columns no group has are left out."""
    g = data.groups
    shown = pd.DataFrame({"Method / variant": g["group"], "Method": g["method"], "Seeds": g["seeds"],
                          "Status": g["status"]})
    bold = pd.DataFrame(False, index=shown.index, columns=shown.columns)
    for header, metric, places in SUMMARY:
        if metric not in g or g[metric].isna().all():
            continue
        shown[header] = [_mean_ci(m, h, places, pm) for m, h in zip(g[metric], g[f"{metric}_ci95"])]
        bold[header] = best_mask(g[metric].round(places), GROUP_METRICS[metric])
    return shown, bold


def is_numeric_column(values: pd.Series) -> bool:
    """True when every entry reads as a number (or mean ± CI, or a dash): such columns align right."""
    texts = [str(v) for v in values if str(v) not in (DASH, "")]
    return bool(texts) and all(re.fullmatch(r"[-+]?[\d,.]+(( ± |\$\\pm\$)[\d,.]+)?", t.strip()) for t in texts)


def md_table(shown: pd.DataFrame, bold: pd.DataFrame | None = None) -> str:
    """A GitHub-flavoured Markdown table of strings; `bold` marks cells to wrap in **."""
    def cell(value: object, strong: bool) -> str:
        text = str(value).replace("|", "\\|").replace("\n", " ")
        return f"**{text}**" if strong and text != DASH else text
    head = "| " + " | ".join(str(c) for c in shown.columns) + " |"
    rule = "|" + "|".join("---:" if is_numeric_column(shown[c]) else "---" for c in shown.columns) + "|"
    if bold is not None:
        bold = bold.reindex(index=shown.index, columns=shown.columns, fill_value=False)
    body = []
    for i in range(len(shown)):
        flags = [bool(bold.iat[i, j]) if bold is not None else False for j in range(shown.shape[1])]
        body.append("| " + " | ".join(cell(v, f) for v, f in zip(shown.iloc[i], flags)) + " |")
    return "\n".join([head, rule, *body])


def cells_frame(data: RunData) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(display strings, bold mask) for the per-cell Markdown table."""
    c = data.cells
    shown = pd.DataFrame({"Cell": c["name"], "Status": c["status"]})
    bold = pd.DataFrame(False, index=shown.index, columns=shown.columns)
    for header, col, places, lower in CELLS:
        if c[col].isna().all():
            continue
        shown[header] = [_fmt(v, places) for v in c[col]]
        if lower is not None:
            bold[header] = best_mask(c[col].round(places), lower)
    return shown, bold


def failed_frame(data: RunData, width: int = 300) -> pd.DataFrame:
    """Failed cells with their status, where they failed and the reason (cut to `width` characters)."""
    f = data.failed
    reasons = [r if len(r) <= width else r[: width - 1] + "…" for r in f["error"].astype(str)]
    where = [f"training step {int(step)}" if not math.isnan(step) else phase
             for phase, step in zip(f["failed_phase"], f["failed_step"])]
    return pd.DataFrame({"Cell": f["name"], "Status": f["status"], "Failed in": where,
                         "Reason": [r or "(no reason recorded)" for r in reasons]})


def tracebacks(data: RunData) -> list[tuple[str, str]]:
    """(cell name, last frames of its traceback) of the failed cells that recorded one."""
    f = data.failed
    return [(name, tb.rstrip()) for name, tb in zip(f["name"], f["traceback"]) if tb]


def latex(data: RunData) -> str:
    """The seed-group summary as a booktabs LaTeX table, best value per column in bold."""
    shown, bold = summary_frame(data, pm=r" $\pm$ ")
    shown = shown.replace(DASH, "--")
    text_cols = ["Method / variant", "Method", "Status"]
    styler = shown.style.hide(axis="index")
    styler = styler.format(escape="latex", subset=text_cols).format_index(escape="latex", axis=1)
    styler = styler.apply(lambda _: bold.replace({True: "textbf:--rwrap;", False: ""}), axis=None)
    align = "".join("l" if c in text_cols else "r" for c in shown.columns)
    caption = UNITS_NOTE.replace("%", r"\%").replace("2^30", "$2^{30}$").replace("2^20", "$2^{20}$")
    return styler.to_latex(hrules=True, column_format=align, caption=caption, label="tab:ft-bench-summary",
                           position_float="centering")


def _section(title: str, body: str) -> str:
    return f"## {title}\n\n{body}\n"


def markdown_sections(data: RunData, chart_lines: Sequence[str], env_lines: Sequence[str]) -> str:
    """The body of report.md after its title: versions, how to read it, summary, cells, failures,
    notes, charts, environment."""
    counts = data.cells["status"].value_counts()
    parts = [", ".join(f"{n} {s}" for s, n in counts.items()) or "no cells"]
    out = [versions_line(data.env, data.records), "", f"{len(data.cells)} cells: {parts[0]}.", ""]
    out.append(_section("How each column is computed",
                        "\n".join(f"- **{name}**: {text}" for name, text in DEFINITIONS) + f"\n- **Units**: {UNITS_NOTE}"))
    if data.skipped_torn:
        out += ["The last line of results.jsonl is torn (a writer was stopped mid-line) and was skipped.", ""]
    if len(data.groups):
        out.append(_section("Summary (mean ± 95% CI over seeds; best in bold)", md_table(*summary_frame(data))))
        out.append(_section("Cells", md_table(*cells_frame(data))))
    failed = failed_frame(data)
    out.append(_section("Failed cells", md_table(failed) if len(failed) else "None: every cell finished."))
    traces = tracebacks(data)
    if traces:  # the last frames; the cell's log (RUN_DIR/logs/CELL_ID.log) holds the whole traceback
        out.append(_section("Tracebacks of failed cells (last frames; the whole one is in the cell's log)",
                            "\n\n".join(f"{name}:\n\n```\n{tb}\n```" for name, tb in traces)))
    notes = data.cells[(data.cells["accuracy_note"] != "") & data.cells["accuracy_%"].isna()]
    if len(notes):
        lines = "\n".join(f"- {n}: {why}" for n, why in zip(notes["name"], notes["accuracy_note"]))
        out.append(_section("Cells without accuracy", lines))
    out.append(_section("Charts", "\n".join(chart_lines) or "No charts were asked for."))
    out.append(_section("Environment", "\n".join(env_lines) or "No env.json in the run folder."))
    return "\n".join(out)

