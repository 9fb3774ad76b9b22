"""Tables of a run: CSV (every field, one row per cell or seed group), LaTeX, and the summary, cell
and failure tables of report.md and report.html (the columns worth reading, best value per column
in bold, mean ± 95% CI over seeds). The best test accuracy in bold is the one whose validation
accuracy is best (bench/report/data.py's `ranked_on`): test accuracy is shown, never chosen on."""
from __future__ import annotations

import math
import re

import pandas as pd

from bench.report.cells import UNITS_NOTE
from bench.report.data import GROUP_METRICS, RunData, ranked_on
from bench.report.document import Table

# Summary columns: (header, source metric, decimals). Lower-is-better comes from GROUP_METRICS.
SUMMARY = [
    ("Peak memory (GiB)", "peak_mem_GiB", 3),
    ("NVML device peak (GiB)", "nvml_device_peak_GiB", 3),
    ("Step time (ms)", "step_ms_median", 1),
    ("Throughput (tokens/s)", "tokens_per_s", 0),
    ("Accuracy (%)", "accuracy_%", 1),
    ("Validation acc. (%)", "validation_accuracy_%", 1),
    ("Training energy (kJ)", "train_kJ", 2),
]
# Per-cell columns: (header, column, decimals, lower is better or None for no bold).
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
    ("Validation acc. (%)", "validation_accuracy_%", 1, False),
    ("Acc. before training (%)", "accuracy_before_%", 1, None),
    ("Forgetting (nats/token)", "forgetting", 3, True),
    ("Eval gen. tokens/s", "eval_generated_tokens_per_s", 0, False),
    ("MFU (%)", "mfu_%", 1, False),
    ("Energy (J/1k tok)", "train_J_per_1k_tokens", 2, True),
    ("Trainable (%)", "trainable_%", 2, None),
]
MEMORY_UNDER = "Memory taken under (glibc)"
# Decimals of the CSV columns (others are written as they are).
CSV_DECIMALS = {"_ci95": 4, "_kJ": 4, "_W": 2, "_J": 3,
                "_GiB": 4, "_MiB": 3, "_ms_median": 3, "_ms_iqr": 3, "_%": 3, "tokens_per_s": 1, "_s": 3}
INT_COLUMNS = ("seed", "batch_size", "seq_len", "steps", "failed_step", "trainable_params", "total_params",
               "eval_examples", "validation_examples", "flops_per_step", "seeds")
DASH = "–"
REASON_CHARS = 2000  # a failure's reason in the tables; the cell's log has all of it


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


def chosen_mask(frame: pd.DataFrame, metric: str, places: int, lower_is_better: bool) -> pd.Series:
    """Bold cells of column `metric`: the best of the column it is chosen on (`ranked_on`), where
    `metric` has a value. Test accuracy's best is so the best on validation, and none without one."""
    on = ranked_on(metric)
    if on not in frame:
        return pd.Series(False, index=frame.index)
    return best_mask(frame[on].round(places), lower_is_better) & frame[metric].notna()


def cut(text: str, width: int) -> str:
    """`text` shortened to `width` characters, an ellipsis marking the cut."""
    return text if len(text) <= width else text[: width - 1] + "…"


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
        bold[header] = chosen_mask(g, metric, places, GROUP_METRICS[metric])
    return shown, bold


def summary_table(data: RunData) -> Table:
    shown, bold = summary_frame(data)
    raw = {h: data.groups[m].tolist() for h, m, _ in SUMMARY if h in shown.columns}
    return Table(shown, bold, raw)


def cells_table(data: RunData) -> Table:
    """The per-cell table: the CELLS columns any cell has, best per column in bold. Cells of sweep
    points not chosen are left out (the Sweeps section has them)."""
    c = data.shown_cells.reset_index(drop=True)
    shown = pd.DataFrame({"Cell": c["name"], "Status": c["status"]})
    bold = pd.DataFrame(False, index=shown.index, columns=shown.columns)
    raw = {}
    for header, col, places, lower in CELLS:
        if c[col].isna().all():
            continue
        shown[header] = [_fmt(v, places) for v in c[col]]
        raw[header] = c[col].tolist()
        if lower is not None:
            bold[header] = chosen_mask(c, col, places, lower)
    if c["peak_mem_allocator"].astype(bool).any():  # CPU figures: the allocator they were taken under
        at = list(shown.columns).index("Peak mem. (GiB)") + 1 if "Peak mem. (GiB)" in shown else len(shown.columns)
        shown.insert(at, MEMORY_UNDER, c["peak_mem_allocator"].tolist())
        bold.insert(at, MEMORY_UNDER, False)
    return Table(shown, bold, raw)


def failed_table(data: RunData) -> Table:
    """Failed cells with their status, where they failed and the reason."""
    f = data.failed
    where = [f"training step {int(step)}" if not math.isnan(step) else phase
             for phase, step in zip(f["failed_phase"], f["failed_step"])]
    reasons = [cut(r, REASON_CHARS) or "(no reason recorded)" for r in f["error"].astype(str)]
    return Table(pd.DataFrame({"Cell": f["name"], "Status": f["status"], "Failed in": where, "Reason": reasons}))


def tracebacks(data: RunData) -> list[tuple[str, str]]:
    """(cell name, last frames of its traceback) of the failed cells that recorded one."""
    f = data.failed
    return [(name, tb.rstrip()) for name, tb in zip(f["name"], f["traceback"]) if tb]


def is_numeric_column(values: pd.Series) -> bool:
    """True when every entry reads as a number (or mean ± CI, or a dash): such columns align right."""
    texts = [str(v) for v in values if str(v) not in (DASH, "")]
    return bool(texts) and all(re.fullmatch(r"[-+]?[\d,.]+(( ± |\$\\pm\$)[\d,.]+)?", t.strip()) for t in texts)


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
