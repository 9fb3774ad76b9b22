"""A run folder read for rendering: the latest record of each cell, one row per cell in display
units (bench/report/cells.py) and one per seed group (mean and 95% CI over seeds). Torch-free.

Of a sweep's points only the one chosen on validation accuracy (bench/report/sweeps.py) is in the
seed groups the tables and charts read; `cells` keeps every cell (results.csv, the Sweeps section,
failures). Every "best" is chosen on validation: `ranked_on` says which column a metric's best is
read from, so test accuracy is shown but never decides."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.report.cells import COLUMNS, cell_row
from bench.report.groups import Group, mean_ci, seed_groups
from bench.report.sweeps import RANKED_ON, Sweep, from_cells, unchosen_rows
from bench.results import store
from bench.results.record import Record

# Metrics summarised over seeds, and whether a lower value is better (for bold "best" cells).
GROUP_METRICS: dict[str, bool] = {
    "accuracy_%": False,
    RANKED_ON: False,  # validation accuracy
    "peak_mem_GiB": True,
    "nvml_device_peak_GiB": True,
    "step_ms_median": True,
    "tokens_per_s": False,
    "train_kJ": True,
}
GROUP_COLUMNS = ["group", "model", "variant", "method", "task", "seeds", "status", "key"]
# Metrics whose best is read from another column: test accuracy is reported, validation decides.
CHOSEN_ON: dict[str, str] = {"accuracy_%": RANKED_ON}


def ranked_on(metric: str) -> str:
    """The column that decides which value of `metric` is best (itself, unless CHOSEN_ON says)."""
    return CHOSEN_ON.get(metric, metric)


@dataclass
class RunData:
    """What the renderers read: the latest record of each cell, its rows, and the seed groups."""

    run_dir: Path
    records: list[Record]
    env: dict[str, Any]
    cells: pd.DataFrame  # one row per cell, display units, in results-file order
    groups: pd.DataFrame  # one row per shown seed group: METRIC (mean), METRIC_ci95 (half-width), METRIC_n
    seed_groups: list[Group]  # the same groups, with their records: no unchosen sweep point among them
    skipped_torn: bool = False
    sweeps: list[Sweep] = field(default_factory=list)
    unchosen: frozenset[int] = frozenset()  # rows of `cells` of sweep points not chosen: the Sweeps section only

    @property
    def failed(self) -> pd.DataFrame:
        return self.cells[self.cells["status"] != "ok"]

    @property
    def shown_cells(self) -> pd.DataFrame:
        """The cells the per-cell table shows: every cell but those of unchosen sweep points."""
        return self.cells.drop(index=sorted(self.unchosen))


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
    found = from_cells(cells)
    unchosen = frozenset(unchosen_rows(found))
    shown = [g for g in groups if not unchosen.intersection(g.rows)]
    return RunData(run_dir, records, store.read_env(run_dir), cells, group_frame(shown, cells), shown,
                   skipped_torn=results.torn_tail, sweeps=found, unchosen=unchosen)
