"""The plan of a call (bench/tools/lease/budget.py): a cell's expected seconds from the hand-written
loop's step times and the planned overheads, then from this run's own records; the clock refuses
what would not fit."""
from __future__ import annotations

import dataclasses

import pytest

from bench.results.record import Record
from bench.tools.lease import budget, handloop, stages
from bench.tools.lease.budget import PLANNED, Clock, OutOfBudget, Planner, steps_run

H200 = "NVIDIA H200"


def _cells() -> dict[str, object]:
    plan = stages.plan(False)
    return {c.method.name: c for s in plan.stages for c in (*s.cells, *([s.selfcheck] if s.selfcheck else []))}


def test_a_cell_is_planned_from_the_hand_loops_step_time_and_the_planned_overheads() -> None:
    cells, hand, p = _cells(), handloop.load(), PLANNED["cuda"]
    planner = Planner("cuda", [], hand, H200)
    row = hand.rows[0]
    cell = cells[row.variant]
    assert planner.cell(cell) == pytest.approx(p.cell_s + steps_run(cell) * row.step_ms / 1e3)
    other = next(c for c in cells.values() if hand.row(c.method.name) is None and c.settings.compile == "off"
                 and c.settings.eval_examples == 0)
    assert planner.cell(other) == pytest.approx(p.cell_s + steps_run(other) * p.step_s)
    compiled = next(c for c in cells.values() if c.settings.compile != "off")
    assert planner.cell(compiled) == pytest.approx(p.cell_s + steps_run(compiled) * p.step_s + p.compile_s)
    icl = next(c for c in cells.values() if c.settings.eval_examples and c.settings.eval_examples > 0)
    assert planner.cell(icl) == pytest.approx(p.cell_s + p.eval_s)  # it trains nothing: its evaluation
    on_another_card = Planner("cuda", [], hand, "NVIDIA A100")  # the hand loop's figures are an H200's
    assert on_another_card.cell(cell) == pytest.approx(p.cell_s + steps_run(cell) * p.step_s)


def test_the_runs_own_records_replace_the_plan() -> None:
    cells, hand = _cells(), handloop.load()
    cell = cells[hand.rows[0].variant]
    settings = dataclasses.asdict(cell.settings)
    done = [Record.from_json({"cell_id": f"x{i}", "status": "ok", "duration_s": 10.0 + i, "settings": settings,
                              "time": {"step_s_median": 0.1}}) for i in range(4)]
    planner = Planner("cuda", done, hand, H200)
    overheads = [10.0 + i - steps_run(cell) * 0.1 for i in range(4)]
    assert planner.cell_s == pytest.approx(sorted(overheads)[2] + 0.25 * (overheads[3] - overheads[2]))  # upper quartile
    retried = Record.from_json({"cell_id": cell.cell_id, "status": "error", "duration_s": 42.0})
    assert Planner("cuda", [retried], hand, H200).cell(cell) == 42.0  # its own earlier record says how long
    assert planner.test(None) == PLANNED["cuda"].test_s and planner.test(3.5) == 3.5


def test_the_clock_refuses_what_would_not_fit() -> None:
    now = [100.0]
    clock = Clock(60, lambda: now[0])
    clock.reserve_s = 5
    now[0] += 30
    clock.require("a cell", 25)  # 30 + 25 + 5 = 60: fits exactly
    with pytest.raises(OutOfBudget, match="a cell is expected to take 26 s and 25 s of the 60 s budget are left"):
        clock.require("a cell", 26)
    assert budget.Clock(10).left() <= 10
