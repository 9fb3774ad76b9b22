"""`bench gpu-check`: the stages in order, each piece of work started only where its expected time
fits what is left of the call's budget, the bundle rewritten after every cell, and a stop between
cells, never in one, when the next would not fit. A second call into the same folders resumes:
cells recorded ok (or unsupported: a rerun on the same software says the same) are skipped, as are
a finished selfcheck and GPU tests that passed. A failing cell or test never stops a later stage.
"""
from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from bench.errors import BenchError
from bench.exec import environment, runner
from bench.exec.launchers import CellLauncher
from bench.exec.lock import RunLock
from bench.results import store
from bench.results.record import Record
from bench.spec import Cell
from bench.tools import selfcheck
from bench.tools.lease import bundle, gputests, handloop, stages, summary
from bench.tools.lease import state as st
from bench.tools.lease.budget import PLANNED, Clock, OutOfBudget, Planner, steps_run

DONE = ("ok", "unsupported")
SELFCHECK_ROUNDS = {"cuda": 2, "cpu": 1}
SELFCHECK_STEPS = {"cuda": 20, "cpu": None}  # None: the cell's own


class Budgeted:
    """A launcher that starts a cell only where its expected time fits what is left."""

    def __init__(self, expected: Callable[[Cell], float], clock: Clock, inner: Any = None) -> None:
        self.expected, self.clock, self.inner = expected, clock, inner or CellLauncher()

    def run(self, cell: Cell, run_dir: Path, matrix: str, slot_env: dict[str, str]) -> Record:
        self.clock.require(f"the next cell, {cell.name},", self.expected(cell))
        # a cell that hangs is killed when the budget is spent, not at its own timeout_s
        return self.inner.run(cell, run_dir, matrix, slot_env, within_s=max(1.0, self.clock.left()))


@dataclasses.dataclass
class Check:
    plan: stages.Plan
    work: Path
    out: Path
    clock: Clock
    state: st.State
    env: dict[str, Any]
    allow_busy_gpu: bool
    say: Callable[[str], None] = print
    current: tuple[dict[str, Any], float] | None = None  # the stage under way: its entry, when it began

    @property
    def device(self) -> str:
        return "cpu" if self.plan.rehearse else "cuda"

    def records(self) -> list[Record]:
        return store.read_records(self.work) if (self.work / store.RESULTS).exists() else []

    def planner(self) -> Planner:
        recs = self.records()
        name = next((r.device.name for r in recs if r.device.name), None)
        return Planner(self.device, recs, handloop.load(), name, self.state.refresh_s)

    def refresh(self, with_report: bool = True) -> None:
        self.state.call["wall_s"] = self.clock.elapsed()
        if self.current is not None:  # the stage under way: a call killed in it still says what it spent
            entry, began = self.current
            entry["wall_s"] = self.clock.elapsed() - began
        self.state.save(self.work)
        latest = store.latest_by_cell(self.records())
        took = bundle.refresh(self.work, self.out, self.state,
                              lambda: summary.render(self.plan, self.state, latest, handloop.load(), self.planner().cell),
                              with_report)
        self.state.refresh_s = [*self.state.refresh_s[-9:], took]
        self.clock.reserve_s = max(self.state.refresh_s)  # the last bundle of the call always fits
        self.state.save(self.work)

    def cells(self, stage: stages.Stage, entry: dict[str, Any]) -> None:
        latest = store.latest_by_cell(self.records())
        todo = [c for c in stage.cells if (r := latest.get(c.cell_id)) is None or r.status not in DONE]
        entry["skipped_done"] = len(stage.cells) - len(todo)
        if not todo:
            return

        def recorded(rec: Record) -> None:
            entry["ran"] += 1
            self.say(f"  {rec.status:<11} {rec.name}  {rec.duration_s or 0:.0f} s"
                     + (f"  ({(rec.error or '').splitlines()[0][:150]})" if rec.error else ""))
            self.refresh()

        launcher = Budgeted(lambda c: self.planner().cell(c) + self.clock.reserve_s, self.clock)
        cache = self.work / "compile-cache"  # one inductor and Triton cache for every compiled cell of the run
        slot = {"TORCHINDUCTOR_CACHE_DIR": str(cache), "TRITON_CACHE_DIR": str(cache / "triton")}
        runner.run_matrix(self.plan.matrix, todo, self.work, True, dict(self.env), recorded, [slot], launcher,
                          self.allow_busy_gpu)

    def selfcheck(self, stage: stages.Stage) -> None:
        if stage.selfcheck is None or (self.state.selfcheck and not self.state.selfcheck.get("error")):
            return
        cell = selfcheck.selfcheck_cell(stage.selfcheck, SELFCHECK_STEPS[self.device])
        rounds = SELFCHECK_ROUNDS[self.device]
        self.clock.require(f"the selfcheck of {cell.name} ({rounds} round(s))",
                           self.planner().selfcheck(cell, rounds) + self.clock.reserve_s)
        self.say(f"  selfcheck {cell.name}: {rounds} round(s), bare loop against the harness")
        try:
            folder = self.work / st.SELFCHECK

            def side(run: Callable[..., dict[str, Any]]) -> Callable[[Cell, str], dict[str, Any]]:
                return lambda c, _: run(c, folder, max(1.0, self.clock.left()))  # a hang ends with the budget

            result = selfcheck.compare(cell, rounds, folder, side(selfcheck.run_bare), side(selfcheck.run_harness),
                                       say=lambda line: self.say("  " + line))
            self.say("  " + selfcheck.main_summary(result).replace("\n", "\n  "))
        except RuntimeError as exc:  # a side that failed: the result says so, the check goes on
            result = {"cell": cell.name, "error": str(exc)}
            self.say(f"  selfcheck failed: {exc}")
        self.state.selfcheck = result
        self.refresh()

    def tests(self, stage: stages.Stage) -> None:
        if not stage.tests:
            return
        if not (gputests.ROOT / "tests").is_dir():
            self.state.tests["tests"] = {"outcome": "error", "message": f"no tests folder in {gputests.ROOT}"}
            return
        planned = PLANNED[self.device]
        self.clock.require("collecting the GPU tests", planned.pytest_s + self.clock.reserve_s)
        nodes = gputests.collect(self.clock.left())
        todo = [n for n in nodes if self.state.tests.get(n, {}).get("outcome") not in gputests.PASSED]
        chosen, need = [], planned.pytest_s + self.clock.reserve_s
        for node in todo:  # as many as fit, in order; the rest wait for the next call
            cost = self.planner().test(self.state.tests.get(node, {}).get("duration_s"))
            if need + cost > self.clock.left():
                break
            chosen.append(node)
            need += cost
        if chosen:
            self.say(f"  pytest: {len(chosen)} GPU test(s)")
            self.state.tests.update(gputests.run(chosen, self.work, self.clock.left()))
            self.refresh()
        if len(chosen) < len(todo):
            raise OutOfBudget(f"{len(todo) - len(chosen)} GPU test(s) would not fit in what is left "
                              f"({max(0.0, self.clock.left()):.0f} s)")


def run(out: Path, work: Path, budget_s: float, rehearse: bool, fresh: bool, allow_busy_gpu: bool, argv: list[str],
        say: Callable[[str], None] = print) -> int:
    """One call: 0 when every stage is done and nothing failed, 1 when done with failures, 3 when it
    stopped for its budget (call again to resume)."""
    clock = Clock(budget_s)
    plan = stages.plan(rehearse)  # every row checked against the matrix before anything runs
    if not rehearse:
        import torch

        if not torch.cuda.is_available():
            raise BenchError("gpu-check needs a CUDA GPU, and this machine has none; `gpu-check --rehearse` runs "
                             "the same stages on tiny models on the CPU")
    if rehearse:
        plan = dataclasses.replace(plan, matrix=dataclasses.replace(plan.matrix, name=f"{plan.matrix.name}-rehearsal"))
    if fresh:
        st.clear(work)
        bundle.clear(out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(work, ".check-lock"):
        state = st.resume(work, out, rehearse)
        state.calls.append({"started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                            "budget_s": budget_s, "command": " ".join(argv), "stages": {}, "wall_s": None, "ended": None})
        env = environment.collect(argv)
        env["matrix"] = {"name": plan.matrix.name, "path": str(plan.matrix.path), "only": "gpu-check stages"}
        if not (work / store.ENV).exists():
            store.write_env(work, env)
        check = Check(plan, work, out, clock, state, env, allow_busy_gpu, say)
        check.refresh(with_report=False)  # a bundle exists from the first second on
        return _stages(check)


def _stages(check: Check) -> int:
    stopped = None
    for stage in check.plan.stages:
        check.say(f"{stage.name}: {stage.title}")
        entry = check.state.stage(stage.name)
        check.current = (entry, check.clock.elapsed())
        try:
            check.cells(stage, entry)
            check.selfcheck(stage)
            check.tests(stage)
        except OutOfBudget as exc:
            entry["stopped"] = stopped = str(exc)
        entry["wall_s"] = check.clock.elapsed() - check.current[1]
        check.current = None
        if stopped:
            check.say(f"stopped: {stopped}; call again into the same folders to resume")
            break
    check.state.call["ended"] = f"stopped in {stage.name}: {stopped}" if stopped else "finished every stage"
    check.refresh()
    latest = store.latest_by_cell(check.records())
    failed = [r for r in latest.values() if r.status not in DONE]
    failed_tests = [n for n, t in check.state.tests.items() if t["outcome"] not in gputests.PASSED]
    check.say(f"bundle: {check.out} ({', '.join(sorted(p.name for p in check.out.iterdir() if p.is_file()))})")
    for problem in bundle.problems(check.out):
        check.say(f"warning: the bundle breaks the device tool's limits: {problem}")
    if stopped:
        return 3
    return 1 if failed or failed_tests or (check.state.selfcheck or {}).get("error") else 0


def default_folders(rehearse: bool) -> tuple[Path, Path]:
    """(work, bundle) when not given: under reports/runs/, the rehearsal's apart."""
    work = Path("reports") / "runs" / ("gpu-check-rehearsal" if rehearse else "gpu-check")
    return work, work / "bundle"



def plan_lines(rehearse: bool, device_name: str, work: Path | None = None) -> list[str]:
    """What each stage is expected to take on a device named `device_name`, cell by cell, with where
    each figure comes from (the run's records in `work`, where there are any)."""
    plan = stages.plan(rehearse)
    device = "cpu" if rehearse else "cuda"
    records = store.read_records(work) if work and (work / store.RESULTS).exists() else []
    hand = handloop.load()
    planner = Planner(device, records, hand, device_name)
    p = PLANNED[device]
    lines = [f"expected seconds on {device_name}: a cell outside its steps {planner.cell_s:.1f}, a step of a row the "
             f"hand loop did not time {planner.step_s * 1e3:.0f} ms, a compile warm-up {planner.compile_s:.0f}, an "
             f"evaluation {planner.eval_s:.1f}, a GPU test {p.test_s:.0f}, pytest's start {p.pytest_s:.0f}, a bundle "
             f"refresh {planner.refresh_s:.0f} (after every cell)"
             + (f"; from the {len(records)} record(s) in {work}" if records else "; planned, no record yet")]
    total = 0.0
    for stage in plan.stages:
        seconds = 0.0
        lines.append(f"{stage.name}: {stage.title}")
        for cell in stage.cells:
            step = planner.step(cell)
            cost = planner.cell(cell) + planner.refresh_s
            seconds += cost
            row = hand.row(cell.method.name) if planner.hand else None
            lines.append(f"  {cost:6.1f} s  {cell.name}  ({'hand loop' if row else 'planned'} step "
                         f"{step * 1e3:.0f} ms x {steps_run(cell)} steps"
                         + (f", compile {planner.compile_s:.0f} s" if cell.settings.compile != "off" else "") + ")")
        if stage.selfcheck is not None:
            check_cell = selfcheck.selfcheck_cell(stage.selfcheck, SELFCHECK_STEPS[device])
            cost = planner.selfcheck(check_cell, SELFCHECK_ROUNDS[device]) + planner.refresh_s
            seconds += cost
            lines.append(f"  {cost:6.1f} s  selfcheck {check_cell.name} ({SELFCHECK_ROUNDS[device]} round(s) x 2 "
                         "processes)")
        if stage.tests:
            count = len(gputests.collect(120))
            cost = p.pytest_s + count * planner.test(None) + planner.refresh_s
            seconds += cost
            lines.append(f"  {cost:6.1f} s  {count} GPU tests")
        total += seconds
        lines.append(f"  {seconds:6.1f} s  {stage.name} in all; {total:.0f} s from the start")
    staged = {c.cell_id for s in plan.stages for c in (*s.cells, *([s.selfcheck] if s.selfcheck else []))}
    rest = [c for c in plan.matrix.cells if c.cell_id not in staged]
    lines.append(f"the rest of the {plan.matrix.name} matrix: {len(rest)} cell(s), "
                 f"{sum(planner.cell(c) for c in rest):.0f} s by the same plan (its hub rows need the hub)")
    return lines
