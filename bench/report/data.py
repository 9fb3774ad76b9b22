"""A run folder read for rendering: the latest record of each cell, one row per cell in display
units (bench/report/cells.py) and one per seed group (mean and 95% CI over seeds). Torch-free."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.report.cells import COLUMNS, cell_row
from bench.report.groups import Group, mean_ci, seed_groups
from bench.results import store
from bench.results.record import Record

# Metrics summarised over seeds, and whether a lower value is better (for bold "best" cells).
GROUP_METRICS: dict[str, bool] = {
    "accuracy_%": False,
    "peak_mem_GiB": True,
    "nvml_device_peak_GiB": True,
    "step_ms_median": True,
    "tokens_per_s": False,
    "train_kJ": True,
}
GROUP_COLUMNS = ["group", "model", "variant", "method", "task", "seeds", "status", "key"]


@dataclass
class RunData:
    """What the renderers read: the latest record of each cell, its rows, and the seed groups."""

    run_dir: Path
    records: list[Record]
    env: dict[str, Any]
    cells: pd.DataFrame  # one row per cell, display units, in results-file order
    groups: pd.DataFrame  # one row per seed group: METRIC (mean), METRIC_ci95 (half-width), METRIC_n
    seed_groups: list[Group]  # the same groups, with their records
    skipped_torn: bool = False

    @property
    def failed(self) -> pd.DataFrame:
        return self.cells[self.cells["status"] != "ok"]


def group_frame(groups: list[Group], cells: pd.DataFrame) -> pd.DataFrame:
    """One row per seed group: its identity, status counts, and each GROUP_METRICS mean, CI and n
    over the group's ok cells."""
    rows = []
    for g in groups:
        part = cells.iloc[g.rows]
        ok = part[part["status"] == "ok"]
        first = part.iloc[0]
        row: dict[str, Any] = {"group": g.label, "model": first["model"], "variant": first["variant"],
                               "method": first["method"], "task": first["task"], "seeds": len(part),
                               "status": g.status_counts, "key": g.key}
        for metric in GROUP_METRICS:
            mean, half, n = mean_ci(ok[metric].tolist())
            row[metric] = mean
            row[f"{metric}_ci95"] = half
            row[f"{metric}_n"] = n
        rows.append(row)
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=GROUP_COLUMNS)


def load(run_dir: Path) -> RunData:
    """Read a run folder (tolerating a torn last line) into RunData; ResultsFileError if unusable."""
    run_dir = Path(run_dir)
    results = store.read_results(run_dir)
    records = list(store.latest_by_cell(results.records).values())
    cells = pd.DataFrame([cell_row(r) for r in records], columns=COLUMNS)
    groups = seed_groups(records)
    labels = {i: g.label for g in groups for i in g.rows}
    cells.insert(1, "group", [labels[i] for i in range(len(records))])
    return RunData(run_dir, records, store.read_env(run_dir), cells, group_frame(groups, cells), groups,
                   skipped_torn=results.torn_tail)
