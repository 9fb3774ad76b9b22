"""Launchers: how a cell's process starts and ends. `CellLauncher` spawns a fresh interpreter per
cell on this machine (its default target is the worker's entry; selfcheck and the tests hand it
other targets); `SubmititLauncher` submits each cell as a submitit job (`--executor slurm` on a
cluster, `--executor local` on this machine, what the tests exercise). Whatever the launcher, a
cell ends as a `Record`: the one it wrote, or one saying how it ended.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bench.errors import BenchError
from bench.exec import torchrun, worker
from bench.results.record import Record
from bench.spec import Cell


def cell_env(slot_env: dict[str, str]) -> dict[str, str]:
    """The environment a cell runs with: ours, the slot's (say CUDA_VISIBLE_DEVICES), the user's
    terminal for the step bar, and the wall clock now (where its setup time starts)."""
    env = {**os.environ, **slot_env, worker.SPAWNED_AT_ENV: repr(time.time())}
    try:
        if sys.stderr.isatty():
            env["BENCH_TTY"] = os.ttyname(sys.stderr.fileno())
    except OSError:
        pass
    return env


@dataclass
class Ended:
    """How a spawned process ended: the JSON it wrote (None if it wrote none), its exit code, and
    whether it ran past its timeout (then its whole process group was killed)."""

    result: dict[str, Any] | None
    exitcode: int | None
    timed_out: bool
    pid: int | None


def spawn(target: Callable[..., None], args: tuple[Any, ...], timeout_s: float) -> Ended:
    """Run `target(*args, out_path)` in a freshly spawned interpreter that dies with us; wait at most
    `timeout_s`. The target writes its result as JSON to `out_path` (bench.exec.worker.write_json)."""
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="bench-cell-") as tmp:
        out_path = str(Path(tmp) / "result.json")
        proc = ctx.Process(target=_child, args=(os.getpid(), target, (*args, out_path)), daemon=False)
        proc.start()
        try:
            proc.join(timeout_s)
        finally:
            timed_out = proc.is_alive()
            if timed_out:
                kill_group(proc)
        result = json.loads(Path(out_path).read_text()) if Path(out_path).exists() and not timed_out else None
    return Ended(result, proc.exitcode, timed_out, proc.pid)


def _child(runner_pid: int, target: Callable[..., None], args: tuple[Any, ...]) -> None:
    """The spawned process: dies with the runner (a SIGKILLed runner must not leave a cell holding
    the GPU for the rerun to measure against), then runs its target."""
    worker.die_with_parent(runner_pid)
    target(*args)


def kill_group(proc: Any) -> None:
    """SIGKILL the process's session (it and anything it started), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()  # it had not yet made its own session
    proc.join()


def _cell_target(cell_json: dict[str, Any], matrix: str, env: dict[str, str], log_path: str, out_path: str) -> None:
    worker.entry(cell_json, out_path, matrix, env, log_path)


class CellLauncher:
    """Starts each cell in a freshly spawned interpreter, so no allocator state, CUDA context or
    thread pool leaks between cells. (Forking from a preloaded server would save the ~6 s of
    imports per cell, but forked cells measured up to 5x slower steps on the CPU here: the
    instrument would distort what it measures.) `target` replaces the cell's process body (tests
    inject failing, hanging or crashing cells through it). A multi-rank cell runs under torchrun
    (bench/exec/torchrun.py) instead, its ranks each running `rank_module`."""

    def __init__(self, target: Callable[..., None] = _cell_target, rank_module: str = torchrun.RANK_MODULE) -> None:
        self.target = target
        self.rank_module = rank_module  # what each rank of a multi-rank cell runs (torchrun's module)

    def run(self, cell: Cell, run_dir: Path, matrix: str, slot_env: dict[str, str],
            within_s: float | None = None) -> Record:
        """Run one cell; the record it wrote, or one saying how it ended. `within_s`: a caller's limit
        below the cell's own timeout_s (the GPU check's budget), without changing the cell."""
        logs = run_dir / "logs"
        logs.mkdir(exist_ok=True)
        log_path = logs / f"{cell.cell_id}.log"
        if cell.settings.distributed:
            return torchrun.run(cell, matrix, cell_env(slot_env), log_path, module=self.rank_module)
        limit = cell.settings.timeout_s if within_s is None else min(within_s, cell.settings.timeout_s)
        ended = spawn(self.target, (cell.to_json(), matrix, cell_env(slot_env), str(log_path)), limit)
        if ended.result is not None:
            return Record.from_json(ended.result)
        rec = worker.base_record(cell, matrix)
        rec.finished_at, rec.worker_pid = worker.now(), ended.pid
        if ended.timed_out:
            rec.status = "timeout"
            why = (f"timeout_s = {limit:g} s" if limit == cell.settings.timeout_s else
                   f"{limit:.0f} s, what was left of the caller's budget (timeout_s = {cell.settings.timeout_s:g} s)")
            rec.error = f"no result after {why}; the cell's processes were killed (log: {log_path})"
        else:
            rec.error = (f"worker {worker.how_it_ended(ended.exitcode)} before writing a record; log tail: "
                         f"{worker.log_tail(log_path, 3)}")
        return rec


def run_job(cell_json: dict[str, Any], matrix: str, env: dict[str, str], folder: str = "") -> dict[str, Any]:
    """A submitit job: runs in submitit's process on the node (one task per node); the record comes
    back as JSON. A multi-rank cell runs torchrun on every node of the job, the rendezvous taken from
    the job's environment (its first node, this node's index); the first node's task returns the record."""
    # the submitter's SLURM_* and GPU list (a runner inside an allocation) must not stand for this job's,
    # and its clock must not start this job's setup time (which would count the queue)
    os.environ.update({k: v for k, v in env.items()
                       if not k.startswith("SLURM_") and k not in ("CUDA_VISIBLE_DEVICES", worker.SPAWNED_AT_ENV)})
    os.environ.pop("BENCH_TTY", None)
    cell = Cell.from_json(cell_json)
    if not cell.settings.distributed:
        return worker.run_cell(cell, matrix).to_json()
    rdzv = None
    if cell.settings.nnodes > 1:
        import submitit

        job = submitit.JobEnvironment()
        rdzv = torchrun.Rendezvous(job.hostnames[0], job.node)
    log = Path(folder or ".") / f"{cell.cell_id}.node{rdzv.node_rank if rdzv else 0}.log"
    return torchrun.run(cell, matrix, {**os.environ}, log, folder or None, rdzv).to_json()


class SubmititLauncher:
    def __init__(self, cluster: str, params: dict[str, Any]) -> None:
        try:
            import submitit
        except ImportError:
            raise BenchError(f"--executor {cluster} needs submitit: pip install submitit "
                             "(or pip install -e '.[cluster]')") from None
        self.submitit = submitit
        self.cluster = cluster
        self.params = {k: v for k, v in params.items() if v is not None}

    def run(self, cell: Cell, run_dir: Path, matrix: str, slot_env: dict[str, str]) -> Record:
        folder = run_dir / "submitit"
        executor = self.submitit.AutoExecutor(folder=folder, cluster=self.cluster)
        timeout_min = max(1, math.ceil(cell.settings.timeout_s / 60))
        params = dict(self.params)
        if cell.settings.distributed:  # one task per node, torchrun starts the ranks
            params.update(nodes=cell.settings.nnodes, tasks_per_node=1)
            if self.cluster == "slurm":
                params["gpus_per_node"] = max(cell.settings.nproc, params.get("gpus_per_node") or 0)
        executor.update_parameters(timeout_min=timeout_min, name=f"bench-{cell.cell_id}", **params)
        started = time.monotonic()
        job = executor.submit(run_job, cell.to_json(), matrix, cell_env(slot_env), str(folder))
        try:
            rec = Record.from_json(job.result())
        except Exception as exc:  # noqa: BLE001 - a failed job is a record, not a crash
            rec = worker.base_record(cell, matrix)
            rec.finished_at = worker.now()
            elapsed = time.monotonic() - started
            text = str(exc).strip()
            timed_out = elapsed >= timeout_min * 60 or "timed-out" in text.lower() or "timeout" in text.lower()
            rec.status = "timeout" if timed_out else "error"
            rec.error = (f"{self.cluster} job {job.job_id} ended without a record: "
                         f"{type(exc).__name__}: {text.splitlines()[-1] if text else ''}")
        rec.executor.set(name=self.cluster, job_id=str(job.job_id), folder=str(folder))
        return rec


def slurm_params(partition: str | None, time_min: int | None, gpus_per_node: int | None,
                 cpus_per_task: int | None, mem_gb: int | None, extra: list[str]) -> dict[str, Any]:
    """submitit parameters from the CLI flags (`--slurm-arg key=value` passes anything else)."""
    params: dict[str, Any] = {"slurm_partition": partition, "gpus_per_node": gpus_per_node,
                              "cpus_per_task": cpus_per_task, "mem_gb": mem_gb}
    if time_min is not None:
        params["timeout_min"] = time_min
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BenchError(f"--slurm-arg {item!r}: expected KEY=VALUE (e.g. slurm_account=myproject)")
        params[key if key.startswith("slurm_") else f"slurm_{key}"] = value
    return params
