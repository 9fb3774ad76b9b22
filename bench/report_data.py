"""Result records turned into the tables every renderer shares: one row per cell, one per seed group.

Records hold raw units (bytes, seconds, fractions); here they become display units once, so every
table and chart shows the same number: memory in GiB (2^30 bytes), checkpoints in MiB (2^20),
step times in ms, accuracy in percent. Optional fields may be absent: they become NaN, never an
error. Torch-free.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd
from scipy import stats

from bench import store

GIB = 2**30
MIB = 2**20
UNITS_NOTE = ("Memory in GiB (1 GiB = 2^30 bytes), checkpoints in MiB (2^20 bytes), step times in ms, "
              "accuracy in percent; CI = 95% confidence interval of the mean over seeds (t distribution).")
# How each headline column is computed: the report's header says it, once, for every renderer.
DEFINITIONS = (
    ("Peak memory", "the training steps' peak (warm-up included, evaluation and loading excluded). CUDA: torch's "
                    "peak allocated bytes, plus a paged optimizer's state in CUDA managed memory, which torch does "
                    "not see. CPU: the peak resident set (Linux VmHWM, reset before the first step) above the "
                    "resident set just before the model loaded, so the interpreter and libraries are not in it. "
                    "Tables, charts, the breakdown and predicted-vs-measured all use this one figure."),
    ("Step time", "median of the timed steps (warm-up excluded); IQR and CV over the same steps."),
    ("Throughput", "mean real (non-padding) tokens per timed step divided by the median step time: the same "
                   "statistic as the step time, so the two rank methods alike (results.csv also has "
                   "tokens_per_s_overall, all timed tokens over the summed step times)."),
    ("Accuracy", "on the first eval_examples sentences of the task's fixed test split, after training."),
    ("Predicted", "the memory model's peak for the same cell (bench predict); 'vs measured' is predicted / "
                  "measured - 1."),
)
VERSION_PACKAGES = ("torch", "transformers", "peft", "bitsandbytes")

# Metrics summarised over seeds, and whether a lower value is better (for bold "best" cells).
GROUP_METRICS: dict[str, bool] = {
    "accuracy_%": False,
    "peak_mem_GiB": True,
    "nvml_device_peak_GiB": True,
    "step_ms_median": True,
    "tokens_per_s": False,
}


BREAKDOWN_PARTS = ("parameters", "gradients", "optimizer", "activations", "other")


def get(rec: dict[str, Any], dotted: str) -> Any:
    """`rec["a"]["b"]` for "a.b", or None where any level is missing or not a mapping."""
    cur: Any = rec
    for part in dotted.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def num(value: Any) -> float:
    """A finite float, or NaN for None, strings, bools and non-finite values."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value) if math.isfinite(value) else math.nan


def samples(value: Any) -> list[float]:
    """The finite numbers of a list field (e.g. `time.step_s`); [] when absent."""
    if not isinstance(value, list):
        return []
    return [x for x in (num(v) for v in value) if not math.isnan(x)]


def _scaled(value: Any, unit: float) -> float:
    return num(value) / unit


def name_of(value: Any) -> str:
    if isinstance(value, dict):  # a model or task spec rather than its name
        return str(value.get("name", ""))
    return "" if value is None else str(value)


def is_cuda(rec: dict[str, Any]) -> bool:
    kind = get(rec, "device.kind")
    if kind is not None:
        return kind == "cuda"
    return get(rec, "memory.peak_allocated_bytes") is not None


def managed_bytes(rec: dict[str, Any]) -> float:
    """Optimizer state in CUDA managed memory (paged optimizers), which torch's counters miss."""
    value = num(get(rec, "optimizer.state_bytes_managed"))
    return 0.0 if math.isnan(value) else value


CPU_PEAK = "peak RSS above the pre-load baseline"


def peak_bytes(rec: dict[str, Any]) -> tuple[float, str]:
    """The headline peak and where it comes from: torch peak allocated plus any managed optimizer
    state on CUDA (so a paged optimizer never shows a saving only torch sees); on the CPU the peak
    resident set of the training steps above the resident set just before the model loaded."""
    if is_cuda(rec):
        value = num(get(rec, "memory.peak_allocated_bytes"))
        managed = managed_bytes(rec)
        if managed and not math.isnan(value):
            return value + managed, "torch peak allocated + managed optimizer state"
        return value, "torch peak allocated"
    return num(get(rec, "memory.peak_rss_above_baseline_bytes")), CPU_PEAK


def step_stats(rec: dict[str, Any]) -> tuple[float, float, float]:
    """(median ms, IQR ms, coefficient of variation %) of the timed steps."""
    steps = samples(get(rec, "time.step_s"))
    median = num(get(rec, "time.step_s_median"))
    iqr = num(get(rec, "time.step_s_iqr"))
    if math.isnan(median) and steps:
        median = statistics.median(steps)
    if math.isnan(iqr) and len(steps) >= 2:
        q = statistics.quantiles(steps, n=4, method="inclusive")
        iqr = q[2] - q[0]
    cv = math.nan
    if len(steps) >= 2 and statistics.fmean(steps) > 0:
        cv = 100 * statistics.stdev(steps) / statistics.fmean(steps)
    return median * 1e3, iqr * 1e3, cv


def versions_line(env: dict[str, Any], records: Sequence[dict[str, Any]]) -> str:
    """The versions that decide the numbers, and the device, in one line for the report's header."""
    packages = env.get("packages") or {}
    parts = [f"{name} {packages.get(name) or 'not installed'}" for name in VERSION_PACKAGES]
    if env.get("cuda_available"):
        parts += [f"CUDA {env.get('cuda') or '?'}", f"driver {env.get('driver') or '?'}"]
    devices = sorted({str(get(r, "device.name")) for r in records if get(r, "device.name")})
    if not devices:
        gpus = [g.get("name") for g in env.get("gpus") or [] if isinstance(g, dict)]
        devices = gpus or ([env["cpu"]] if env.get("cpu") else [])
    parts.append("device: " + (", ".join(devices) or "not recorded"))
    if env.get("python"):
        parts.append(f"Python {env['python']}")
    return " · ".join(parts)


def group_key(rec: dict[str, Any]) -> str:
    """Everything that defines a cell except the seed, as one string."""
    fields = ("matrix", "model", "variant", "method", "method_config", "task", "settings", "model_spec",
              "task_options")
    if all(rec.get(k) is None for k in fields[1:]):  # nothing to group on: the cell is its own group
        return json.dumps({"cell_id": rec["cell_id"]})
    return json.dumps({k: rec.get(k) for k in fields}, sort_keys=True, default=str)


def cell_row(rec: dict[str, Any]) -> dict[str, Any]:
    """One flat row of display values for a record; absent fields become NaN or ""."""
    peak, source = peak_bytes(rec)
    median_ms, iqr_ms, cv = step_stats(rec)
    trainable, total = num(get(rec, "params.trainable")), num(get(rec, "params.total"))
    row: dict[str, Any] = {
        "name": str(rec.get("name") or rec["cell_id"]), "cell_id": rec["cell_id"],
        "matrix": name_of(rec.get("matrix")), "model": name_of(rec.get("model")),
        "variant": str(rec.get("variant") or rec.get("method") or ""), "method": str(rec.get("method") or ""),
        "task": name_of(rec.get("task")), "seed": num(rec.get("seed")),
        "batch_size": num(get(rec, "settings.batch_size")), "seq_len": num(get(rec, "settings.seq_len")),
        "steps": num(get(rec, "settings.steps")), "precision": get(rec, "settings.precision") or "",
        "optimizer": get(rec, "settings.optimizer") or "",
        "gradient_checkpointing": get(rec, "settings.gradient_checkpointing"),
        "device": get(rec, "device.name") or get(rec, "device.kind") or "",
        "status": str(rec["status"]), "failed_phase": str(rec.get("failed_phase") or ""),
        "failed_step": num(rec.get("failed_step")), "error": rec.get("error") or "",
        "traceback": str(rec.get("traceback") or ""),
        "trainable_params": trainable, "total_params": total,
        "trainable_%": 100 * trainable / total if total else math.nan,
        "peak_mem_GiB": peak / GIB, "peak_mem_source": source if not math.isnan(peak) else "",
    }
    for col, field in (("peak_alloc_GiB", "peak_allocated_bytes"), ("peak_reserved_GiB", "peak_reserved_bytes"),
                       ("nvml_device_peak_GiB", "nvml_device_peak_bytes"),
                       ("nvml_process_peak_GiB", "nvml_process_peak_bytes"), ("peak_rss_GiB", "peak_rss_bytes"),
                       ("rss_baseline_GiB", "rss_baseline_bytes"),
                       ("weights_GiB", "weights_bytes"), ("eval_peak_alloc_GiB", "eval_peak_allocated_bytes")):
        row[col] = _scaled(get(rec, f"memory.{field}"), GIB)
    row["optimizer_state_GiB"] = _scaled(get(rec, "optimizer.state_bytes_device"), GIB)
    row["optimizer_managed_GiB"] = _scaled(get(rec, "optimizer.state_bytes_managed"), GIB)
    row.update({
        "step_ms_median": median_ms, "step_ms_iqr": iqr_ms, "step_cv_%": cv,
        "tokens_per_s": num(get(rec, "time.tokens_per_s")),
        "tokens_per_s_overall": num(get(rec, "time.tokens_per_s_overall")), "train_s": num(get(rec, "time.train_s")),
        "eval_s": num(get(rec, "time.eval_s")), "eval_examples_per_s": num(get(rec, "time.eval_examples_per_s")),
        "accuracy_%": 100 * num(get(rec, "quality.accuracy")),
        "accuracy_before_%": 100 * num(get(rec, "quality.accuracy_before")),
        "eval_loss": num(get(rec, "quality.eval_loss")),
        "train_loss_first": num(get(rec, "quality.train_loss_first")),
        "train_loss_last": num(get(rec, "quality.train_loss_last")),
        "eval_examples": num(get(rec, "quality.eval_examples")),
        "accuracy_note": get(rec, "quality.accuracy_note") or "",
        "bits_per_param": num(get(rec, "quant.bits_per_param")), "quant_type": get(rec, "quant.quant_type") or "",
        "double_quant": get(rec, "quant.double_quant"),
        "optimizer_paged_active": get(rec, "optimizer.paged_active"),
        "paged_note": get(rec, "optimizer.paged_note") or "",
        "flops_per_step": num(get(rec, "flops.flops_per_step")),
        "achieved_TFLOPS": num(get(rec, "flops.achieved_tflops")),
        "peak_TFLOPS": num(get(rec, "flops.peak_tflops")), "mfu_%": 100 * num(get(rec, "flops.mfu")),
        "mfu_note": get(rec, "flops.mfu_note") or "",
    })
    # Optional memory detail, in GiB: the split of the weights, the measured breakdown, the prediction.
    for prefix, field, parts in (("weights", "weights", ("quantized_payload", "quant_constants", "unquantized")),
                                 ("breakdown", "breakdown", BREAKDOWN_PARTS),
                                 ("predicted", "predicted", BREAKDOWN_PARTS[:4] + ("peak",))):
        for part in parts:
            row[f"{prefix}_{part}_GiB"] = _scaled(get(rec, f"memory.{field}.{part}_bytes"), GIB)
    measured = row["peak_mem_GiB"]
    row["predicted_vs_measured_%"] = (100 * (row["predicted_peak_GiB"] / measured - 1) if measured > 0
                                      else math.nan)
    row.update({
        "checkpoint_MiB": _scaled(rec.get("checkpoint_bytes"), MIB), "duration_s": num(rec.get("duration_s")),
        "started_at": rec.get("started_at") or "", "finished_at": rec.get("finished_at") or "",
    })
    return row


def mean_ci(values: Iterable[float]) -> tuple[float, float, int]:
    """(mean, half-width of the 95% t interval, n) of the finite values; half-width NaN for n < 2."""
    xs = [v for v in values if not math.isnan(v)]
    if not xs:
        return math.nan, math.nan, 0
    mean = statistics.fmean(xs)
    if len(xs) < 2:
        return mean, math.nan, 1
    sem = statistics.stdev(xs) / math.sqrt(len(xs))
    return mean, float(stats.t.ppf(0.975, len(xs) - 1)) * sem, len(xs)


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


def _status_summary(statuses: Sequence[str]) -> str:
    counts = {s: statuses.count(s) for s in dict.fromkeys(statuses)}
    if set(counts) == {"ok"}:
        return f"ok {counts['ok']}/{len(statuses)}"
    return ", ".join(f"{s} {n}/{len(statuses)}" for s, n in counts.items())


@dataclass
class RunData:
    """What the renderers read: the latest record of each cell, its rows, and the seed groups."""

    run_dir: Path
    records: list[dict[str, Any]]
    env: dict[str, Any]
    cells: pd.DataFrame  # one row per cell, display units, in results-file order
    groups: pd.DataFrame  # one row per seed group: METRIC (mean), METRIC_ci95 (half-width), METRIC_n
    labels: dict[str, str]  # group key -> short label (only the parts that vary across groups)
    skipped_torn: bool = False

    @property
    def failed(self) -> pd.DataFrame:
        return self.cells[self.cells["status"] != "ok"]


def short_labels(records: Sequence[dict[str, Any]]) -> dict[str, str]:
    """A short, unique label per group: the variant, plus model, task and the settings that differ
    between otherwise identical groups, each only where it varies."""
    by_key = {group_key(r): r for r in records}
    varies = {f: len({name_of(r.get(f)) for r in by_key.values()}) > 1 for f in ("model", "task")}
    base = {k: (name_of(r.get("model")), str(r.get("variant") or r.get("method") or r.get("name") or r["cell_id"]),
                name_of(r.get("task")))
            for k, r in by_key.items()}
    shared: dict[str, set[str]] = {k: set() for k in by_key}  # settings that tell a group from its twins
    for k, r in by_key.items():
        for k2, r2 in by_key.items():
            if base[k] == base[k2] and k != k2:
                s1, s2 = r.get("settings") or {}, r2.get("settings") or {}
                shared[k] |= {s for s in set(s1) | set(s2) if s1.get(s) != s2.get(s)}
    labels = {}
    for k, r in by_key.items():
        model, variant, task = base[k]
        parts = ([model] if varies["model"] else []) + [variant] + ([task] if varies["task"] else [])
        settings = r.get("settings") or {}
        parts += [f"{s}={settings.get(s)}" for s in sorted(shared[k])]
        labels[k] = " / ".join(parts)
    return labels


def _groups(records: Sequence[dict[str, Any]], cells: pd.DataFrame, labels: dict[str, str]) -> pd.DataFrame:
    keys = [group_key(r) for r in records]
    rows = []
    for key in dict.fromkeys(keys):
        idx = [i for i, k in enumerate(keys) if k == key]
        part = cells.iloc[idx]
        ok = part[part["status"] == "ok"]
        first = part.iloc[0]
        row: dict[str, Any] = {"group": labels[key], "model": first["model"], "variant": first["variant"],
                               "method": first["method"], "task": first["task"], "seeds": len(part),
                               "status": _status_summary(list(part["status"])), "key": key}
        for metric in GROUP_METRICS:
            mean, half, n = mean_ci(ok[metric].tolist())
            row[metric] = mean
            row[f"{metric}_ci95"] = half
            row[f"{metric}_n"] = n
        rows.append(row)
    return pd.DataFrame(rows)


def load(run_dir: Path) -> RunData:
    """Read a run folder (tolerating a torn last line) into RunData; ResultsFileError if unusable."""
    run_dir = Path(run_dir)
    raw = store.read_records(run_dir)
    latest = store.latest_by_cell(raw)
    records = list(latest.values())
    env = store.read_env(run_dir)
    columns = list(cell_row({"cell_id": "", "status": ""}))  # the same columns even with no records
    cells = pd.DataFrame([cell_row(r) for r in records], columns=columns)
    labels = short_labels(records)
    groups = _groups(records, cells, labels)
    if not records:
        groups = pd.DataFrame(columns=["group", "model", "variant", "method", "task", "seeds", "status", "key"])
    cells.insert(1, "group", [labels[group_key(r)] for r in records])
    text = (run_dir / store.RESULTS).read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1].strip()
    torn = bool(text) and not text.endswith(b"}")
    return RunData(run_dir, records, env, cells, groups, labels, skipped_torn=torn)

