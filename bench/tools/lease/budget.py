"""How long the next piece of work should take, and whether it fits what is left of the call.

A cell's expected seconds: its own earlier record's duration where this run has one (a retried
cell), else its overhead (spawn, imports, load and quantization, adaptation, the FLOP count, the
memory model's prediction, exit) plus its steps (warm-up, timed, and the one the FLOP count takes)
at its step time, plus a compile warm-up where it compiles and an evaluation where it scores.
Step times come from the cell's earlier record, else the hand-written loop's row on the same card,
else the plan below; overheads from this run's finished cells (their upper quartile) as soon as there
are any, else the plan. Torch-free.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

from bench.errors import BenchError
from bench.registry import method_class
from bench.results.record import Record
from bench.spec import Cell
from bench.tools.lease.handloop import HandLoop


@dataclass(frozen=True)
class Planned:
    """Seconds to plan with before this run's own records say better."""

    cell_s: float  # a cell outside its steps
    step_s: float  # a step of a row the hand loop did not time (above its slowest rows but one)
    compile_s: float  # a compiled cell's compile warm-up, from a cold cache
    eval_s: float  # one evaluation (a cell that trains nothing is one)
    test_s: float  # one GPU test (some run a cell or two in processes of their own, most one step in-process)
    pytest_s: float  # pytest's start and collection
    refresh_s: float  # rewriting the bundle once, the report's charts included


# cuda: planned for an H200 from the parts of a cell's setup measured on this project's CPU machine
# (README, "The GPU check"); cpu: the rehearsal on a 2-core CPU, measured.
PLANNED = {
    "cuda": Planned(cell_s=16.0, step_s=0.30, compile_s=75.0, eval_s=6.0, test_s=10.0, pytest_s=20.0, refresh_s=2.0),
    "cpu": Planned(cell_s=9.0, step_s=0.05, compile_s=40.0, eval_s=1.0, test_s=0.5, pytest_s=15.0, refresh_s=4.0),
}


class OutOfBudget(BenchError):
    """The next piece of work would not fit: the call stops cleanly before it."""


class Clock:
    """Seconds since the call began against its budget; `reserve_s` stays for the last bundle."""

    def __init__(self, budget_s: float, now: Callable[[], float] = time.monotonic) -> None:
        self.budget_s, self._now, self._t0 = budget_s, now, now()
        self.reserve_s = 0.0

    def elapsed(self) -> float:
        return self._now() - self._t0

    def left(self) -> float:
        return self.budget_s - self.elapsed() - self.reserve_s

    def require(self, what: str, seconds: float) -> None:
        """Raise OutOfBudget unless `seconds` of work fit in what is left."""
        left = self.left()
        if seconds > left:
            raise OutOfBudget(f"{what} is expected to take {seconds:.0f} s and {max(0.0, left):.0f} s of the "
                              f"{self.budget_s:.0f} s budget are left")


def _q3(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=4, method="inclusive")[2]


def steps_run(cell: Cell) -> int:
    """Optimizer-sized steps a training cell takes: warm-up, timed, and the FLOP count's one."""
    return cell.settings.warmup_steps + cell.settings.steps + 1


class Planner:
    """Expected seconds per cell and per test, from the plan and this run's records."""

    def __init__(self, device: str, records: list[Record], hand: HandLoop | None, device_name: str | None,
                 refresh_s: list[float] | None = None) -> None:
        self.planned = PLANNED[device]
        self.hand = hand if hand is not None and device_name and hand.device.lower() in device_name.lower() else None
        self.latest: dict[str, Record] = {}
        for rec in records:
            self.latest[rec.cell_id or ""] = rec
        self.refresh_s = max(refresh_s) if refresh_s else self.planned.refresh_s
        done = [r for r in records if r.ok and r.duration_s]
        trained = [r for r in done if r.time.step_s_median]
        overheads = [self._overhead(r) for r in trained]
        self.cell_s = _q3(overheads) if overheads else self.planned.cell_s
        compiles = [self._compile(r) for r in trained if r.time.compile_warmup_steps]
        self.compile_s = _q3(compiles) if compiles else self.planned.compile_s
        evals = [r.time.eval_s for r in done if r.time.eval_s]
        self.eval_s = _q3(evals) if evals else self.planned.eval_s
        steps = [r.time.step_s_median for r in trained]
        self.step_s = _q3(steps) if steps and self.hand is None else self.planned.step_s

    @staticmethod
    def _compile(rec: Record) -> float:
        t = rec.time
        return (t.compile_s or 0.0) + (t.compile_warmup_steps or 0) * (t.step_s_median or 0.0)

    def _overhead(self, rec: Record) -> float:
        s = rec.settings or {}
        steps = (s.get("warmup_steps") or 0) + (s.get("steps") or 0) + 1
        return max(0.0, (rec.duration_s or 0.0) - steps * rec.time.step_s_median - self._compile(rec)
                   - 2 * (rec.time.eval_s or 0.0))

    def step(self, cell: Cell) -> float:
        earlier = self.latest.get(cell.cell_id)
        if earlier is not None and earlier.time.step_s_median:
            return earlier.time.step_s_median
        row = self.hand.row(cell.method.name) if self.hand else None
        return row.step_ms / 1e3 if row else self.step_s

    def cell(self, cell: Cell) -> float:
        earlier = self.latest.get(cell.cell_id)
        if earlier is not None and earlier.duration_s:
            return earlier.duration_s
        s = cell.settings
        scores = s.eval_examples != 0
        if not method_class(cell.method.method).trains:
            return self.cell_s + self.eval_s
        total = self.cell_s + steps_run(cell) * self.step(cell) + (2 * self.eval_s if scores else 0.0)
        return total + (self.compile_s if s.compile != "off" else 0.0)

    def selfcheck(self, cell: Cell, rounds: int) -> float:
        """Both sides of every round, each a fresh process running the cell's steps."""
        return 2 * rounds * (self.cell_s + steps_run(cell) * self.step(cell))

    def test(self, earlier_s: float | None) -> float:
        return earlier_s if earlier_s is not None else self.planned.test_s
