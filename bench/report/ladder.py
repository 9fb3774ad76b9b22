"""Recipe ladders: method rows of a matrix that share a `ladder` name are its rungs, in matrix order,
each adding one technique to the one above (packing, compile, chunked loss, checkpointing, 8-bit
AdamW, LoRA, QLoRA...). Per ladder, model and task: what each rung changes (read off the records,
not typed by hand), peak memory and tokens/s with their change against the nearest rung above that
finished, step time, MFU and accuracy, seeds averaged. A table per ladder and one chart."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from bench.report.data import RunData
from bench.report.document import Table
from bench.report.style import GIB_LABEL, new_figure
from bench.results.record import Record
from bench.spec import RECIPE_DEFAULTS

DASH = "–"
# What "adds" leaves out: settings that do not change the recipe, only how much is run or measured.
NOT_RECIPE = {"steps", "warmup_steps", "eval_examples", "validation_examples", "eval_batch_size", "timeout_s",
              "threads", "max_new_tokens", "general_tokens"}


@dataclass
class Rung:
    rung: int
    variant: str
    adds: str
    status: str
    peak_GiB: float
    tokens_per_s: float
    step_ms: float
    mfu_pct: float
    accuracy_pct: float
    padding_pct: float
    compile_s: float


def _checkpointing(value: Any) -> Any:
    """Records keep `gradient_checkpointing` (false, true, k); the ladder says it as the matrix does."""
    if value is None or isinstance(value, bool):
        return "full" if value else "off"
    return value


def _recipe(rec: Record) -> dict[str, Any]:
    # a recipe axis a record lacks was at its default (records written before the axis existed)
    settings = {k: v for k, v in {**RECIPE_DEFAULTS, **(rec.settings or {})}.items() if k not in NOT_RECIPE}
    if "gradient_checkpointing" in settings:
        settings["activation_checkpointing"] = _checkpointing(settings.pop("gradient_checkpointing"))
    options = {f"{rec.method}.{k}": v for k, v in (rec.method_config or {}).items()}
    return {"method": rec.method, **options, **settings}


def _adds(rec: Record, above: Record | None) -> str:
    """What changed from the rung above: the method (with its options) and the settings that differ."""
    if above is None:
        return f"base: {rec.variant}"
    now, before = _recipe(rec), _recipe(above)
    keys = [k for k in dict.fromkeys([*now, *before]) if now.get(k) != before.get(k)]
    if rec.method != above.method:  # the old method's options go with it
        keys = [k for k in keys if not k.startswith(f"{above.method}.")]
    return ", ".join(f"{k} = {now.get(k)}" for k in keys) or "nothing (same recipe)"


def _mean(values: list[float]) -> float:
    xs = [v for v in values if not math.isnan(v)]
    return statistics.fmean(xs) if xs else math.nan


def ladders(data: RunData) -> dict[tuple[str, str, str], list[Rung]]:
    """(ladder, model, task) -> its rungs in order, seeds averaged over ok cells."""
    c = data.cells
    if "ladder" not in c or not (c["ladder"] != "").any():
        return {}
    by_key: dict[tuple[str, str, str], dict[int, list[int]]] = {}
    for i, row in c.iterrows():
        if row["ladder"]:
            by_key.setdefault((row["ladder"], row["model"], row["task"]), {}).setdefault(int(row["rung"]), []).append(i)
    out: dict[tuple[str, str, str], list[Rung]] = {}
    for key, rungs in by_key.items():
        rows: list[Rung] = []
        above: Record | None = None
        for rung in sorted(rungs):
            part = c.loc[rungs[rung]]
            ok = part[part["status"] == "ok"]
            rec = data.records[rungs[rung][0]]
            status = "ok" if len(ok) == len(part) else ", ".join(sorted(set(part["status"])))

            def m(col: str) -> float:
                return _mean(ok[col].tolist())

            rows.append(Rung(rung, str(rec.variant), _adds(rec, above), status, m("peak_mem_GiB"), m("tokens_per_s"),
                             m("step_ms_median"), m("mfu_%"), m("accuracy_%"), m("padding_%"), m("compile_s")))
            above = rec
        if len(rows) > 1:  # one rung compares with nothing (a base row on a model without the ladder)
            out[key] = rows
    return out


def _change(now: float, before: float) -> float:
    return 100 * (now / before - 1) if before and not math.isnan(before) and not math.isnan(now) else math.nan


def _fmt(value: float, places: int, signed: bool = False) -> str:
    if math.isnan(value):
        return DASH
    return f"{value:+.{places}f}" if signed else f"{value:,.{places}f}"


def frame(rungs: list[Rung]) -> pd.DataFrame:
    """The raw numbers of one ladder, with each rung's change against the nearest ok rung above."""
    records = []
    last_ok: Rung | None = None
    for r in rungs:
        ref = last_ok
        records.append({"rung": r.rung, "variant": r.variant, "adds": r.adds, "status": r.status,
                        "peak_mem_GiB": r.peak_GiB,
                        "peak_mem_change_%": _change(r.peak_GiB, ref.peak_GiB) if ref else math.nan,
                        "tokens_per_s": r.tokens_per_s,
                        "tokens_per_s_change_%": _change(r.tokens_per_s, ref.tokens_per_s) if ref else math.nan,
                        "step_ms_median": r.step_ms, "mfu_%": r.mfu_pct, "accuracy_%": r.accuracy_pct,
                        "padding_%": r.padding_pct, "compile_s": r.compile_s})
        if not math.isnan(r.peak_GiB) or not math.isnan(r.tokens_per_s):
            last_ok = r
    return pd.DataFrame(records)


def table(rungs: list[Rung]) -> Table:
    f = frame(rungs)
    shown = pd.DataFrame({
        "Rung": [f"{r} {v}" for r, v in zip(f["rung"], f["variant"])],
        "Adds": f["adds"],
        "Status": f["status"],
        "Peak mem. (GiB)": [_fmt(v, 3) for v in f["peak_mem_GiB"]],
        "Δ mem. (%)": [_fmt(v, 1, True) for v in f["peak_mem_change_%"]],
        "Tokens/s": [_fmt(v, 0) for v in f["tokens_per_s"]],
        "Δ tokens/s (%)": [_fmt(v, 1, True) for v in f["tokens_per_s_change_%"]],
        "Step (ms)": [_fmt(v, 1) for v in f["step_ms_median"]],
        "MFU (%)": [_fmt(v, 1) for v in f["mfu_%"]],
        "Accuracy (%)": [_fmt(v, 1) for v in f["accuracy_%"]],
        "Padding (%)": [_fmt(v, 1) for v in f["padding_%"]],
    })
    if f["compile_s"].notna().any():  # compilation, apart from the step times
        shown["Compile (s)"] = [_fmt(v, 1) for v in f["compile_s"]]
    return Table(shown, sortable=False)


def ladders_csv(data: RunData) -> str:
    frames = []
    for (ladder, model, task), rungs in ladders(data).items():
        f = frame(rungs)
        f.insert(0, "task", task)
        f.insert(0, "model", model)
        f.insert(0, "ladder", ladder)
        frames.append(f)
    return pd.concat(frames).to_csv(index=False, float_format="%.4f") if frames else ""


def ladder_chart(data: RunData, colours: dict[str, str]) -> Figure | None:
    """Per ladder, two panels side by side: peak memory and tokens/s of each rung, top to bottom."""
    found = ladders(data)
    if not found:
        return None
    height = sum(len(r) for r in found.values()) * 0.32 + 1.1 * len(found) + 0.4
    fig, flat = new_figure(7.0, height, ncols=2, nrows=len(found))
    axes = [flat[i:i + 2] for i in range(0, len(flat), 2)]
    for row, ((ladder, model, task), rungs) in enumerate(found.items()):
        labels = [f"{r.rung} {r.variant}" for r in rungs][::-1]
        mem = [r.peak_GiB for r in rungs][::-1]
        tps = [r.tokens_per_s for r in rungs][::-1]
        for ax, values, xlabel in ((axes[row][0], mem, f"Peak memory ({GIB_LABEL})"),
                                   (axes[row][1], tps, "Tokens/s")):
            ys = range(len(values))
            ax.barh(list(ys), [0 if math.isnan(v) else v for v in values], color="#4C72B0")
            for y, v in zip(ys, values):
                if math.isnan(v):
                    ax.text(0, y, " failed or unsupported", va="center", fontsize="small", color="#666666")
            ax.set_yticks(list(ys))
            ax.set_yticklabels(labels if ax is axes[row][0] else [])
            ax.set_xlabel(xlabel)
        axes[row][0].set_title(f"{ladder}: {model} on {task}", loc="left")
    return fig
