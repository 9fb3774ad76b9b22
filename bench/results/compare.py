"""`bench compare BASELINE CURRENT`: find regressions between two runs, for CI.

Cells are matched by `cell_id`. A regression is
- step time: the median grew by more than `time_tol` AND the per-step samples say the current run
  is slower (one-sided Mann-Whitney U, p < 0.01), so noise alone never fails CI;
- memory: the headline peak (bench/results/peaks.py: torch peak allocated plus managed optimizer
  state on CUDA, peak RSS above the pre-load baseline on the CPU), NVML's device peak, and torch's
  peak alone where a paged optimizer makes it differ from the headline: grew by more than
  `mem_tol`, and on the CPU by more than the cell's noise floor too (`peaks.noise_floor`: the spread
  of the cell's seeds in the baseline, else in the current run, else a stated fraction of the
  baseline figure; each finding names its floor and how it was derived);
- accuracy: dropped by more than `acc_tol` percentage points, or went missing;
- status: ok in the baseline, not ok now.
Throughput is reported, not judged (it is step time seen from the other side). `metrics` limits
what is judged (say memory and accuracy only). Unusable input raises ResultsFileError naming the
file and line (bench/results/baseline.py reads the run folders, and saves baselines). Torch-free.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

from scipy import stats

from bench.errors import ConfigError, did_you_mean
from bench.results import peaks
from bench.results.baseline import load_run, save_baseline  # noqa: F401 (save_baseline: `bench baseline`)
from bench.results.record import Record
from bench.results.values import GIB, MIB, num, samples

P_VALUE = 0.01
Verdict = Literal["regression", "improved", "warning", "same"]
# What can be judged; "time" is the step time (throughput, reported alongside, is never judged).
METRICS = ("time", "memory", "accuracy", "status")
HEADLINE = "headline peak"  # a finding's metric: "headline peak (<where it comes from>)"


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
    figures: tuple[float, float] | None = None  # the raw baseline and current values judged (bytes for memory)


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


def _judge_bytes(cell: str, metric: str, b: float, c: float, tol: float,
                floor: peaks.Floor | None = None) -> Finding | None:
    """One memory figure: a regression beyond `tol` and, where there is one, beyond the noise floor."""
    if math.isnan(b) or math.isnan(c):
        return None
    change = c / b - 1 if b > 0 else (math.inf if c > 0 else 0.0)
    beyond = floor is None or abs(c - b) > floor.bytes
    verdict: Verdict = "regression" if change > tol and beyond else "improved" if change < -tol and beyond else "same"
    why = []
    if verdict == "regression":
        why.append(f"more than the {tol:.0%} tolerance" + (" and the noise floor" if floor else ""))
    if floor is not None:
        why.append(f"noise floor {floor.bytes / MIB:.1f} MiB: {floor.source}")
    return Finding(cell, metric, f"{b / GIB:.3f} GiB", f"{c / GIB:.3f} GiB", _pct(change), verdict, "; ".join(why),
                   (b, c))


def _memory(cell: str, base: Record, cur: Record, tol: float, floor: peaks.Floor) -> list[Finding]:
    """The headline peak (with the CPU's noise floor), then on CUDA torch's peak alone where managed
    optimizer state makes the headline differ from it, and NVML's device peak."""
    hb, hc = peaks.headline_peak(base), peaks.headline_peak(cur)
    if base.cuda != cur.cuda:
        return [Finding(cell, HEADLINE, hb.source, hc.source, "n/a", "warning",
                        "measured on different devices: the figures are not comparable, so not judged")]
    found = [_judge_bytes(cell, f"{HEADLINE} ({hc.source})", hb.bytes, hc.bytes, tol,
                          None if cur.cuda else floor)]
    if found[0] is not None and hb.source != hc.source:
        found[0].why = "; ".join(filter(None, [found[0].why, f"the baseline's figure is {hb.source}"]))
    if cur.cuda:
        bm, cm = base.memory, cur.memory
        if peaks.managed_bytes(base) or peaks.managed_bytes(cur):
            found.append(_judge_bytes(cell, "torch peak allocated", num(bm.peak_allocated_bytes),
                                      num(cm.peak_allocated_bytes), tol))
        found.append(_judge_bytes(cell, "NVML device peak", num(bm.nvml_device_peak_bytes),
                                  num(cm.nvml_device_peak_bytes), tol))
    return [f for f in found if f is not None]


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
                 metrics: Sequence[str] = METRICS, floor: peaks.Floor | None = None) -> list[Finding]:
    """Every judged metric of one cell present in both runs (the metrics of a cell that fails in
    either run: its status only). `floor`: the CPU headline's noise floor (default: the one
    `peaks.noise_floor` gives where neither run repeats the cell)."""
    cell = _name(cur)
    if not (base.ok and cur.ok):
        return [_status(cell, base, cur, "status" in metrics)]
    found: list[Finding | None] = []
    if "time" in metrics:
        found.append(_step_time(cell, base, cur, time_tol))
    if "memory" in metrics:
        found += _memory(cell, base, cur, mem_tol, floor or peaks.noise_floor(base, {}, {}))
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
           f"memory +{mem_tol:.1%} (on the CPU also beyond the cell's noise floor: the spread of its seeds in "
           f"the baseline, else in the current run, else {peaks.RSS_NOISE_FRACTION:.0%} of the baseline "
           f"figure; each row names its floor); accuracy -{acc_tol:g} percentage points. The headline peak is "
           f"{peaks.TORCH_MANAGED} on CUDA, {peaks.CPU} on the CPU. Memory in GiB (2^30 bytes), floors in "
           "MiB (2^20).", ""]
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
    base, cur = load_run(baseline_dir, "baseline"), load_run(current_dir, "current")
    res = CompareResult(Path(baseline_dir), Path(current_dir))
    res.missing_in_current = [_name(r) for k, r in base.items() if k not in cur]
    res.missing_in_baseline = [_name(r) for k, r in cur.items() if k not in base]
    spread = peaks.spreads(base.values()), peaks.spreads(cur.values())
    for cell_id, cur_rec in cur.items():
        if cell_id in base:
            res.matched += 1
            floor = peaks.noise_floor(base[cell_id], *spread)
            res.findings += compare_cell(base[cell_id], cur_rec, time_tol, mem_tol, acc_tol, judged, floor)
    res.markdown = _markdown(res, time_tol, mem_tol, acc_tol, judged)
    return res
