"""`bench.report.data`, `cells` and `groups`: one row per cell in display units, seed groups with
mean and t interval, typed records, and the fixture runs every report test reads."""
from __future__ import annotations

import importlib.util
import json
import math
import statistics
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from bench.report import data as report_data
from bench.results import store
from bench.results.record import Record

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _generator():
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _csv(report: Path, name: str = "results.csv") -> pd.DataFrame:
    return pd.read_csv(report / name, keep_default_na=True)


def test_committed_fixtures_are_what_the_generator_writes(tmp_path: Path) -> None:
    _generator().main(tmp_path)
    for path in FIXTURES.rglob("*"):
        if path.is_file() and path.suffix in (".jsonl", ".json"):
            fresh = tmp_path / path.relative_to(FIXTURES)
            assert fresh.read_bytes() == path.read_bytes(), f"{path} is stale: run make_fixtures.py"


def test_fixture_records_are_what_a_record_writes() -> None:
    for path in FIXTURES.rglob("results.jsonl"):
        for line in path.read_text().splitlines():
            if line.endswith("}") and path.parent.name != "partial":  # partial: only the required fields
                obj = json.loads(line)
                assert Record.from_json(obj).to_json() == obj, path


def test_results_csv_has_one_row_per_cell_and_units_in_headers(cpu_report: Path) -> None:
    cells = _csv(cpu_report)
    records = [json.loads(ln) for ln in (FIXTURES / "cpu_run/results.jsonl").read_text().splitlines()]
    assert len(cells) == len({r["cell_id"] for r in records}) == 7
    for header in ("peak_mem_GiB", "peak_rss_GiB", "step_ms_median", "step_ms_iqr", "step_cv_%", "tokens_per_s",
                   "accuracy_%", "checkpoint_MiB"):
        assert header in cells.columns
    full = cells[cells["variant"] == "full"].iloc[0]
    assert full["peak_mem_GiB"] == pytest.approx(0.40, abs=1e-4)  # 0.40 * 2^30 bytes
    assert math.isnan(full["peak_alloc_GiB"])  # a CPU run has no CUDA counters
    assert cells[cells["variant"] == "lora-r16"].iloc[0]["status"] == "ok"


def test_memory_columns_are_gib_and_step_times_ms(cuda_report: Path) -> None:
    cells = _csv(cuda_report)
    rec = json.loads((FIXTURES / "cuda_run/results.jsonl").read_text().splitlines()[0])
    row = cells[cells["cell_id"] == rec["cell_id"]].iloc[0]
    assert row["peak_alloc_GiB"] == pytest.approx(rec["memory"]["peak_allocated_bytes"] / 2**30, abs=1e-4)
    assert row["nvml_device_peak_GiB"] == pytest.approx(rec["memory"]["nvml_device_peak_bytes"] / 2**30, abs=1e-4)
    assert row["step_ms_median"] == pytest.approx(rec["time"]["step_s_median"] * 1e3, abs=1e-3)
    assert row["accuracy_%"] == pytest.approx(100 * rec["quality"]["accuracy"])


def test_paged_optimizer_state_is_counted_in_the_headline_peak(cuda_report: Path) -> None:
    paged = _csv(cuda_report).set_index("variant").loc["lora-paged8bit"]
    assert paged["optimizer_managed_GiB"] > 0
    assert paged["peak_mem_GiB"] == pytest.approx(paged["peak_alloc_GiB"] + paged["optimizer_managed_GiB"], abs=1e-3)


def test_seed_groups_have_mean_and_t_interval(cuda_report: Path) -> None:
    groups = _csv(cuda_report, "groups.csv").set_index("group")
    accs = [86.0, 87.0, 85.0]
    half = stats.t.ppf(0.975, 2) * statistics.stdev(accs) / math.sqrt(3)
    assert groups.loc["lora-r8", "accuracy_%"] == pytest.approx(86.0)
    assert groups.loc["lora-r8", "accuracy_%_ci95"] == pytest.approx(half, abs=1e-3)
    assert groups.loc["lora-r8", "seeds"] == 3
    assert math.isnan(groups.loc["lora-paged8bit", "accuracy_%_ci95"])  # one seed: no interval
    assert groups.loc["full / batch_size=64", "status"] == "oom 1/1"


def test_step_time_cv_per_cell(cuda_report: Path) -> None:
    cells = _csv(cuda_report).set_index("cell_id")
    rec = json.loads((FIXTURES / "cuda_run/results.jsonl").read_text().splitlines()[1])
    steps = rec["time"]["step_s"]
    expected = 100 * statistics.stdev(steps) / statistics.fmean(steps)
    assert cells.loc[rec["cell_id"], "step_cv_%"] == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("name", ["cpu_run", "cuda_run", "all_failed", "partial"])
def test_seed_groups_are_one_grouping_for_tables_and_charts(name: str) -> None:
    data = report_data.load(FIXTURES / name)
    assert all(isinstance(r, Record) for r in data.records)
    groups = data.seed_groups
    assert [g.label for g in groups] == list(data.groups["group"])  # the table's rows, in the same order
    assert [g.status_counts for g in groups] == list(data.groups["status"])
    assert sorted(i for g in groups for i in g.rows) == list(range(len(data.records)))
    for g in groups:
        assert [data.records[i] for i in g.rows] == g.records
        assert set(data.cells["group"].iloc[g.rows]) == {g.label}


@pytest.mark.parametrize(("name", "torn"), [("partial", True), ("cpu_run", False), ("all_failed", False)])
def test_a_torn_last_line_is_what_the_store_reports(name: str, torn: bool) -> None:
    assert report_data.load(FIXTURES / name).skipped_torn is torn
    assert store.read_results(FIXTURES / name).torn_tail is torn


def test_groups_and_cells_keep_their_columns_without_records(tmp_path: Path) -> None:
    (tmp_path / "results.jsonl").write_text("")
    data = report_data.load(tmp_path)
    assert data.seed_groups == [] and len(data.cells) == 0 and len(data.groups) == 0
    assert "peak_mem_GiB" in data.cells.columns and "group" in data.groups.columns
