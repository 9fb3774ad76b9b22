"""One cell, in its own process: open a session (plan, load, adapt), run the scenario for the
method's kind (training, or evaluation only), and return the record, whatever happened.

The launcher starts `entry` in a fresh process per cell; it writes the record to a JSON file.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.errors import UnsupportedError
from bench.results.record import Record
from bench.spec import Cell

PHASES = ("plan", "load", "adapt", "evaluation before", "training", "count", "evaluation", "save")
SPAWNED_AT_ENV = "BENCH_SPAWNED_AT"  # the launcher's wall clock when it started the cell's process


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Phase:
    """Where the cell is: a failure record names the phase (and the training step) it happened in."""

    name: str = "plan"
    loop: Any = field(default=None)  # the training loop's LoopState (its step is the one that failed)
    started: dict[str, float] = field(default_factory=lambda: {"plan": time.time()})  # wall clock per phase

    def at(self, name: str) -> None:
        self.name = name
        self.started.setdefault(name, time.time())

    @property
    def step(self) -> int | None:
        return self.loop.step if self.name == "training" and self.loop is not None else None

    def where(self) -> str:
        return f"at training step {self.step}" if self.step is not None else f"in phase '{self.name}'"

    def setup(self, spawned_at: float | None) -> dict[str, Any]:
        """The `time` block's setup figures: from the process's start (the launcher's clock, where it
        says) to the end of adaptation, in parts: the interpreter's start, imports and device
        initialisation with the plan, the load (quantization included), the adaptation."""
        marks = self.started
        ready = next((marks[n] for n in PHASES[PHASES.index("adapt") + 1:] if n in marks), None)
        parts = {"spawn": marks["plan"] - spawned_at if spawned_at is not None else None,
                 "imports_and_plan": _span(marks, "plan", "load"), "load": _span(marks, "load", "adapt"),
                 "adapt": ready - marks["adapt"] if ready is not None and "adapt" in marks else None}
        if ready is None:  # it ended before it was set up
            return {"setup_parts_s": parts}
        return {"setup_s": ready - (marks["plan"] if spawned_at is None else spawned_at), "setup_parts_s": parts}


def _span(marks: dict[str, float], a: str, b: str) -> float | None:
    return marks[b] - marks[a] if a in marks and b in marks else None


def base_record(cell: Cell, matrix: str) -> Record:
    """The fields every record has, whatever happened to the cell."""
    return Record(cell_id=cell.cell_id, name=cell.name, matrix=matrix, variant=cell.method.name,
                  ladder=cell.method.ladder, rung=cell.method.rung,
                  sweep=cell.method.sweep, sweep_point=cell.method.sweep_point,
                  method=cell.method.method, method_config=cell.method.options, model=cell.model.name,
                  model_spec=cell.model.record(), task=cell.task.name, task_options=cell.task.options,
                  seed=cell.seed, settings=cell.settings.record(), status="error", started_at=now())


def how_it_ended(code: int | None) -> str:
    """A process's end in words, from its exit code (negative: the signal that killed it)."""
    return f"killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"


def log_tail(log_path: Path, lines: int) -> str:
    """The last `lines` lines of a cell's log, on one line."""
    tail = log_path.read_text(errors="replace").strip().splitlines()[-lines:] if log_path.exists() else []
    return " | ".join(tail)


def execute(cell: Cell, rec: Record, phase: Phase) -> None:
    """Run the cell, filling `rec` as it goes (so a failure keeps what was measured)."""
    from bench.loop import LoopState
    from bench.scenarios import evaluation, training
    from bench.scenarios.session import open_session

    with open_session(cell, rec, phase.at) as session:
        if session.plan.method.trains:
            phase.loop = LoopState()
            training.run(session, phase.loop)
        else:
            evaluation.run(session)


def run_cell(cell: Cell, matrix: str = "") -> Record:
    """The cell's record: ok, or unsupported / oom / error with the reason and where it failed."""
    phase = Phase()  # before torch loads: its import is part of the setup
    rec = base_record(cell, matrix)
    try:
        import torch

        oom: tuple[type, ...] = (torch.OutOfMemoryError,)
    except ImportError:
        oom = ()
    try:
        execute(cell, rec, phase)
        rec.status = "ok"
    except UnsupportedError as exc:
        rec.status, rec.error = "unsupported", str(exc)
    except oom as exc:
        _failed(rec, phase)
        rec.status, rec.error = "oom", f"out of memory {phase.where()}: {(str(exc).splitlines() or [''])[0]}"
        from bench.scenarios.session import predicted

        rec.memory.predicted.set(**predicted(cell, rec.device.kind or "cuda"))  # what it would need
    except Exception as exc:  # noqa: BLE001 - any failure is a result, not a crash
        _failed(rec, phase)
        rec.status, rec.error = "error", f"{type(exc).__name__} {phase.where()}: {exc}"
    if rec.device.kind == "cuda":
        device_driver(rec)
    spawned = os.environ.get(SPAWNED_AT_ENV)
    rec.time.set(**phase.setup(float(spawned) if spawned else None))
    rec.finished_at = now()
    return rec


def device_driver(rec: Record) -> None:
    """The GPU's driver and torch's CUDA version, read here: the cell's process is on the cell's
    machine (a cluster job's node is not the runner's); the rest of what produced the record the
    runner adds from env.json (`provenance`)."""
    import torch

    from bench.exec.environment import driver_version

    rec.device.set(driver=driver_version()[0], cuda=torch.version.cuda)


def _failed(rec: Record, phase: Phase) -> None:
    """Name where the cell failed; the whole traceback goes to the cell's log, its last frames to the record."""
    rec.set(failed_phase=phase.name, failed_step=phase.step, traceback=traceback.format_exc(limit=-8))
    print(f"cell failed {phase.where()}:", file=sys.stderr)
    traceback.print_exc(file=sys.stderr)
    sys.stderr.flush()


def die_with_parent(parent_pid: int | None = None) -> None:
    """SIGKILLed when the parent dies (Linux): no orphan left holding a GPU or a port. Gone at once if
    the parent died before that took effect: its pid is no longer the parent's (`parent_pid`), or,
    where the caller does not know it, the process was handed to init."""
    if sys.platform != "linux":
        return
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        return
    if os.getppid() != parent_pid if parent_pid is not None else os.getppid() == 1:
        os._exit(1)


def redirect_to_log(log_path: str, env: dict[str, str]) -> None:
    """In a fresh cell process: its own session (so a timeout kills its children too), stdout and
    stderr into the cell's log, and exactly the environment the runner gave it."""
    os.setsid()
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    os.environ.clear()
    os.environ.update(env)


def write_json(out_path: str, obj: dict[str, Any]) -> None:
    """Written whole or not at all: the launcher reads a missing file as a crashed process."""
    tmp = Path(out_path + ".tmp")
    tmp.write_text(json.dumps(obj, default=str))
    os.replace(tmp, out_path)


def entry(cell_json: dict[str, Any], out_path: str, matrix: str, env: dict[str, str], log_path: str) -> None:
    """Process target of a cell."""
    redirect_to_log(log_path, env)
    rec = run_cell(Cell.from_json(cell_json), matrix)
    write_json(out_path, rec.to_json())
    sys.stdout.flush()
    sys.stderr.flush()
