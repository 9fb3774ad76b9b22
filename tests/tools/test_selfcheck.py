"""The overhead check (bench/tools/selfcheck.py): the bare loop trains like the harness, runs
alternate, and the ratios are what the medians say."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.results import peaks
from bench.spec import Cell
from bench.tools import selfcheck
from tests.helpers import cell


def test_bare_loop_trains_the_cell_without_the_harness(tmp_path: Path) -> None:
    # in a fresh process, as selfcheck runs it: in this long-lived test process the allocator reuses
    # pages freed by earlier tests, and the peak above the pre-load RSS would mean nothing
    result = selfcheck.run_bare(cell("lora", options={"r": 4}, steps=3, warmup_steps=1), tmp_path)
    assert len(result["step_s"]) == 3 and all(s > 0 for s in result["step_s"])
    assert result["step_s_median"] == sorted(result["step_s"])[1]
    assert result["peak_kind"] == peaks.CPU and result["peak_bytes"] > 0  # the headline peak's CPU figure


def test_runs_alternate_and_ratios_come_from_the_medians(tmp_path: Path) -> None:
    order: list[str] = []

    def fake(step_s: float, peak: int) -> Any:
        def run(c: Cell, side: str) -> dict[str, Any]:
            order.append(side)
            return {"step_s_median": step_s, "peak_bytes": peak, "peak_kind": "peak_rss_above_baseline_bytes"}
        return run

    result = selfcheck.compare(cell("lora"), 3, tmp_path, fake(0.100, 1000), fake(0.101, 1005), say=lambda _: None)
    assert order == ["bare", "harness", "harness", "bare", "bare", "harness"]
    assert result["step_ratio"] == pytest.approx(1.01) and result["peak_diff"] == pytest.approx(0.005)
    assert result["step_ratio_pooled"] == pytest.approx(1.01) and len(result["step_ratios"]) == 3
    assert "+1.00%" in selfcheck.main_summary(result) and "+0.50%" in selfcheck.main_summary(result)


def test_selfcheck_cell_turns_evaluation_off() -> None:
    c = selfcheck.selfcheck_cell(cell("lora"), steps=50)
    assert c.settings.eval_examples == 0 and c.settings.steps == 50
    same = selfcheck.selfcheck_cell(cell("lora"))
    assert same.settings.steps == cell("lora").settings.steps and same.settings.eval_examples == 0
