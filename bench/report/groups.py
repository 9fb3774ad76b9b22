"""Seed groups: the cells that differ only in their seed, summarised together by tables and charts.

This is the one place records are grouped; a group keeps its records (for the charts) and their
positions in the run's records (for the per-cell table rows).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from scipy import stats

from bench.report.cells import name_of
from bench.results.peaks import repeat_key
from bench.results.record import Record


@dataclass
class Group:
    key: str
    label: str  # short and unique: only the parts that vary across groups
    method: str
    records: list[Record] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)  # positions of `records` in the run's records

    @property
    def ok(self) -> list[Record]:
        return [r for r in self.records if r.ok]

    @property
    def status(self) -> str:
        """The statuses that occur, e.g. "oom, error"."""
        return ", ".join(dict.fromkeys(str(r.status) for r in self.records))

    @property
    def status_counts(self) -> str:
        """"ok 3/3", or each status with its count, e.g. "ok 2/3, oom 1/3"."""
        statuses = [str(r.status) for r in self.records]
        counts = {s: statuses.count(s) for s in dict.fromkeys(statuses)}
        if set(counts) == {"ok"}:
            return f"ok {counts['ok']}/{len(statuses)}"
        return ", ".join(f"{s} {n}/{len(statuses)}" for s, n in counts.items())


def group_key(rec: Record) -> str:
    """Everything that defines a cell except the seed, as one string (the cells that repeat one
    another, as `bench compare` groups them too)."""
    return repeat_key(rec)


def _base_label(rec: Record) -> tuple[str, str, str]:
    return name_of(rec.model), str(rec.variant or rec.method or rec.name or rec.cell_id), name_of(rec.task)


def short_labels(records: Sequence[Record]) -> dict[str, str]:
    """A short, unique label per group: the variant, plus model, task and the settings that differ
    between otherwise identical groups, each only where it varies."""
    by_key = {group_key(r): r for r in records}
    base = {k: _base_label(r) for k, r in by_key.items()}
    varies_model = len({model for model, _, _ in base.values()}) > 1
    varies_task = len({task for _, _, task in base.values()}) > 1
    differing: dict[str, set[str]] = {k: set() for k in by_key}  # settings that tell a group from its twins
    for k, r in by_key.items():
        for k2, r2 in by_key.items():
            if base[k] == base[k2] and k != k2:
                s1, s2 = r.settings or {}, r2.settings or {}
                differing[k] |= {s for s in set(s1) | set(s2) if s1.get(s) != s2.get(s)}
    labels = {}
    for k, r in by_key.items():
        model, variant, task = base[k]
        parts = ([model] if varies_model else []) + [variant] + ([task] if varies_task else [])
        settings = r.settings or {}
        parts += [f"{s}={settings.get(s)}" for s in sorted(differing[k])]
        labels[k] = " / ".join(parts)
    return labels


def seed_groups(records: Sequence[Record]) -> list[Group]:
    """The seed groups of `records`, in order of first appearance."""
    labels = short_labels(records)
    out: dict[str, Group] = {}
    for i, rec in enumerate(records):
        key = group_key(rec)
        group = out.setdefault(key, Group(key, labels[key], str(rec.method or "")))
        group.records.append(rec)
        group.rows.append(i)
    return list(out.values())


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
