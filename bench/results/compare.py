"""`bench compare BASELINE CURRENT`: find regressions between two runs, for CI.

Cells are matched by `cell_id`. A regression is
- step time: the median grew by more than `time_tol` AND the per-step samples say the current run
  is slower (one-sided Mann-Whitney U, p < 0.01), so noise alone never fails CI;
- memory (torch peak allocated and NVML device peak on CUDA, peak RSS above the pre-load baseline on
  CPU): grew by more than `mem_tol`, and for RSS by more than RSS_NOISE_BYTES too (identical runs of
  a tiny model differed by up to 2.5 MiB, 10%: the allocator keeps pages as it pleases);
- accuracy: dropped by more than `acc_tol` percentage points, or went missing;
- status: ok in the baseline, not ok now.
Throughput is reported, not judged (it is step time seen from the other side). `metrics` limits
what is judged (say memory and accuracy only). Unusable input raises ResultsFileError naming the
file and line. Torch-free.
"""
from __future__ import annotations

import math
import os
import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Sequence

from scipy import stats

from bench.errors import ConfigError, ResultsFileError, did_you_mean
from bench.results import store
from bench.results.record import Memory, Record
from bench.results.values import GIB, num, samples

P_VALUE = 0.01
Verdict = Literal["regression", "improved", "warning", "same"]
# What can be judged; "time" is the step time (throughput, reported alongside, is never judged).
METRICS = ("time", "memory", "accuracy", "status")
RSS_NOISE_BYTES = 4 * 2**20
# Memory fields compared where both runs have them, and the change below which they are noise.
MEMORY: list[tuple[str, Callable[[Memory], int | None], int]] = [
    ("torch peak allocated", lambda m: m.peak_allocated_bytes, 0),
    ("NVML device peak", lambda m: m.nvml_device_peak_bytes, 0),
    ("peak RSS above baseline", lambda m: m.peak_rss_above_baseline_bytes, RSS_NOISE_BYTES),
]


@dataclass
class Finding:
    """One metric of one cell, judged."""

    cell: str
    metric: str
    baseline: str
    current: str
    change: str
    verdict: Verdict
    why: str = ""


@dataclass
class CompareResult:
    baseline_dir: Path
    current_dir: Path
    findings: list[Finding] = field(default_factory=list)
    missing_in_current: list[str] = field(default_factory=list)  # cell names only the baseline has
    missing_in_baseline: list[str] = field(default_factory=list)  # cell names only the current run has
    matched: int = 0
    markdown: str = ""

    def of(self, verdict: Verdict) -> list[Finding]:
        return [f for f in self.findings if f.verdict == verdict]

    @property
    def regressions(self) -> list[Finding]:
        return self.of("regression")

    @property
    def exit_code(self) -> int:
        """0 when clean, 1 on any regression (or when no cell could be compared at all)."""
        return 1 if self.regressions or self.matched == 0 else 0


def parse_percent(text: str | float) -> float:
    """'5%' -> 0.05; a bare number is taken as a fraction ('0.05'), and must be below 1 to be unambiguous."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ConfigError(f"tolerance {text!r} is not a percentage; write it like '5%' or 0.05") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"tolerance {text!r} must be a non-negative percentage, like '5%'")
    if not raw.endswith("%") and value >= 1:
        raise ConfigError(f"tolerance {text!r} is ambiguous: write '{raw}%' for percent, or a fraction below 1")
    return value


def parse_metrics(metrics: str | Sequence[str] | None) -> tuple[str, ...]:
    """The metrics to judge, in METRICS order: all of them for None, else a subset of METRICS given
    as names or as one comma-separated string ('memory,accuracy')."""
    if metrics is None:
        return METRICS
    names = [m.strip() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
    for name in names:
        if name not in METRICS:
            raise ConfigError(f"compare metric {name!r} is not known{did_you_mean(name, METRICS)}")
    if not names:
        raise ConfigError(f"no compare metric given{did_you_mean('', METRICS)}")
    return tuple(m for m in METRICS if m in names)


def _load(run_dir: Path, side: str) -> dict[str, Record]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ResultsFileError(f"{run_dir}: {side} run folder does not exist")
    records = store.read_records(run_dir, strict=True)  # a torn line here is an error: CI must not guess
    if not records:
        raise ResultsFileError(f"{run_dir / store.RESULTS}: no result records")
    store.read_env(run_dir)  # fail on a garbled env.json here rather than later
    return store.latest_by_cell(records)


def _name(rec: Record) -> str:
    return str(rec.name or rec.cell_id)


def _pct(change: float) -> str:
    return "n/a" if math.isnan(change) else f"{change:+.1%}"


def min_p(n: int, m: int) -> float:
    """The smallest one-sided p-value Mann-Whitney U can give for samples of n and m."""
    return 1 / math.comb(n + m, n) if n and m else 1.0


def _step_time(cell: str, base: Record, cur: Record, tol: float) -> Finding | None:
    b, c = samples(base.time.step_s), samples(cur.time.step_s)
    b_med = statistics.median(b) if b else num(base.time.step_s_median)
    c_med = statistics.median(c) if c else num(cur.time.step_s_median)
    if math.isnan(b_med) or math.isnan(c_med) or b_med <= 0:
        return None
    change = c_med / b_med - 1
    shown = dict(cell=cell, metric="step time (median)", baseline=f"{b_med * 1e3:.2f} ms",
                 current=f"{c_med * 1e3:.2f} ms", change=_pct(change))
    if abs(change) <= tol:
        return Finding(**shown, verdict="same")
    if min_p(len(b), len(c)) >= P_VALUE:
        why = (f"beyond the {tol:.0%} tolerance, but {len(b)} and {len(c)} per-step samples cannot reach "
               f"p < {P_VALUE}: record more timed steps")
        return Finding(**shown, verdict="warning", why=why)
    alternative = "greater" if change > 0 else "less"
    p = float(stats.mannwhitneyu(c, b, alternative=alternative).pvalue)
    if p >= P_VALUE:
        return Finding(**shown, verdict="same", why=f"within noise (Mann-Whitney U p = {p:.3f})")
    return Finding(**shown, verdict="regression" if change > 0 else "improved",
                   why=f"Mann-Whitney U p = {p:.2g} ({len(b)} vs {len(c)} steps)")


def _memory(cell: str, base: Record, cur: Record, tol: float) -> list[Finding]:
    out = []
    for label, field_of, noise in MEMORY:
        b, c = num(field_of(base.memory)), num(field_of(cur.memory))
        if math.isnan(b) or math.isnan(c):
            continue
        change = c / b - 1 if b > 0 else (math.inf if c > 0 else 0.0)
        beyond = abs(c - b) > noise
        verdict: Verdict = "regression" if change > tol and beyond else "improved" if change < -tol and beyond else "same"
        why = f"more than the {tol:.0%} tolerance" + (f" and {noise / 2**20:g} MiB" if noise else "")
        why = why if verdict == "regression" else ""
        out.append(Finding(cell, label, f"{b / GIB:.3f} GiB", f"{c / GIB:.3f} GiB", _pct(change), verdict, why))
    return out


def _accuracy(cell: str, base: Record, cur: Record, tol_pp: float) -> Finding | None:
    b, c = 100 * num(base.quality.accuracy), 100 * num(cur.quality.accuracy)
    if math.isnan(b):
        return None
    if math.isnan(c):
        note = cur.quality.accuracy_note or "no reason recorded"
        return Finding(cell, "accuracy", f"{b:.2f}%", "missing", "n/a", "regression", f"accuracy missing: {note}")
    diff = c - b
    verdict: Verdict = "regression" if diff < -tol_pp else "improved" if diff > tol_pp else "same"
    why = f"dropped more than {tol_pp:g} points" if verdict == "regression" else ""
    return Finding(cell, "accuracy", f"{b:.2f}%", f"{c:.2f}%", f"{diff:+.2f} pp", verdict, why)


def _throughput(cell: str, base: Record, cur: Record) -> Finding | None:
    b, c = num(base.time.tokens_per_s), num(cur.time.tokens_per_s)
    if math.isnan(b) or math.isnan(c) or b <= 0:
        return None
    return Finding(cell, "tokens/s", f"{b:,.0f}", f"{c:,.0f}", _pct(c / b - 1), "same", "reported, not judged")


def _status(cell: str, base: Record, cur: Record, judged: bool) -> Finding:
    """A cell that fails in either run. Where status is not judged, a cell that now fails is a
    warning: it is reported, but it fails nothing."""
    reason = cur.error or base.error or "no reason recorded"
    verdict: Verdict = "regression" if base.ok else "improved" if cur.ok else "warning"
    why = {"regression": f"now fails: {reason}", "improved": "fixed",
           "warning": f"fails in both runs: {reason}"}[verdict]
    if verdict == "regression" and not judged:
        verdict, why = "warning", f"{why} (status is not among the judged metrics)"
    return Finding(cell, "status", str(base.status), str(cur.status), "", verdict, why)


def compare_cell(base: Record, cur: Record, time_tol: float, mem_tol: float, acc_tol: float,
                 metrics: Sequence[str] = METRICS) -> list[Finding]:
    """Every judged metric of one cell present in both runs (the metrics of a cell that fails in
    either run: its status only)."""
    cell = _name(cur)
    if not (base.ok and cur.ok):
        return [_status(cell, base, cur, "status" in metrics)]
    found: list[Finding | None] = []
    if "time" in metrics:
        found.append(_step_time(cell, base, cur, time_tol))
    if "memory" in metrics:
        found += _memory(cell, base, cur, mem_tol)
    if "time" in metrics:
        found.append(_throughput(cell, base, cur))
    if "accuracy" in metrics:
        found.append(_accuracy(cell, base, cur, acc_tol))
    return [f for f in found if f is not None]


def _table(rows: list[Finding], why: bool = True) -> str:
    head = "| Cell | Metric | Baseline | Current | Change |" + (" Why |" if why else "")
    rule = "|---|---|---:|---:|---:|" + ("---|" if why else "")
    lines = [head, rule]
    for f in rows:
        cells = [f.cell, f.metric, f.baseline, f.current, f.change] + ([f.why] if why else [])
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def _markdown(res: CompareResult, time_tol: float, mem_tol: float, acc_tol: float,
              metrics: Sequence[str] = METRICS) -> str:
    regressions = res.regressions
    if res.matched == 0:
        verdict = "NOTHING COMPARED (no cell is in both runs)"
    else:
        verdict = f"REGRESSION ({len(regressions)})" if regressions else "clean"
    out = [f"## Benchmark comparison: {verdict}", "",
           f"Baseline `{res.baseline_dir}`, current `{res.current_dir}`: {res.matched} cells compared.",
           f"Tolerances: step time +{time_tol:.1%} and a one-sided Mann-Whitney U test at p < {P_VALUE}; "
           f"memory +{mem_tol:.1%} (CPU RSS: and +{RSS_NOISE_BYTES / 2**20:g} MiB); accuracy -{acc_tol:g} "
           "percentage points. Memory in GiB (2^30 bytes).", ""]
    if tuple(metrics) != METRICS:
        out[-1:] = [f"Judged: {', '.join(metrics)} only (the other metrics are not compared).", ""]
    sections: list[tuple[str, Verdict]] = [("Regressions", "regression"), ("Warnings", "warning"),
                                           ("Improvements", "improved")]
    for title, kind in sections:
        rows = res.of(kind)
        if rows:
            out += [f"### {title}", "", _table(rows), ""]
    for title, names in (("Cells missing from the current run", res.missing_in_current),
                         ("Cells only in the current run (no baseline)", res.missing_in_baseline)):
        if names:
            out += [f"### {title}", "", *[f"- {n}" for n in names], ""]
    same = res.of("same")
    if same:
        out += ["<details><summary>Unchanged metrics</summary>", "", _table(same), "", "</details>", ""]
    return "\n".join(out)


def compare(baseline_dir: Path, current_dir: Path, time_tol: float = 0.05, mem_tol: float = 0.02,
            acc_tol: float = 1.0, metrics: str | Sequence[str] | None = None) -> CompareResult:
    """Compare two run folders. `time_tol` and `mem_tol` are fractions (0.05 = 5%), `acc_tol` is in
    percentage points; `metrics` is a subset of METRICS to judge (default: all). Raises
    ResultsFileError for a missing folder or an unreadable results file, ConfigError for a bad
    tolerance or metric."""
    for name, value in (("time_tol", time_tol), ("mem_tol", mem_tol), ("acc_tol", acc_tol)):
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{name} = {value!r} must be a non-negative number")
    judged = parse_metrics(metrics)
    base, cur = _load(baseline_dir, "baseline"), _load(current_dir, "current")
    res = CompareResult(Path(baseline_dir), Path(current_dir))
    res.missing_in_current = [_name(r) for k, r in base.items() if k not in cur]
    res.missing_in_baseline = [_name(r) for k, r in cur.items() if k not in base]
    for cell_id, cur_rec in cur.items():
        if cell_id in base:
            res.matched += 1
            res.findings += compare_cell(base[cell_id], cur_rec, time_tol, mem_tol, acc_tol, judged)
    res.markdown = _markdown(res, time_tol, mem_tol, acc_tol, judged)
    return res


def save_baseline(run_dir: Path, name: str, root: Path = Path("reports/baselines")) -> Path:
    """Copy RUN_DIR/results.jsonl and env.json into ROOT/NAME/ (replacing an older baseline of that
    name) and return that folder. The results must read cleanly: a baseline is not a partial run."""
    if not name or name in (".", "..") or any(ch in name for ch in "/\\") or name.strip() != name:
        raise ConfigError(f"baseline name {name!r} must be a plain folder name (no '/', '\\' or surrounding spaces)")
    _load(run_dir, "run")
    dest = Path(root) / name
    dest.mkdir(parents=True, exist_ok=True)
    for fname in (store.RESULTS, store.ENV):
        src, target = Path(run_dir) / fname, dest / fname
        if not src.exists():
            target.unlink(missing_ok=True)  # an env.json from an older baseline would describe another run
            continue
        tmp = target.with_name(target.name + ".tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, target)  # readers never see half a baseline file
    return dest
