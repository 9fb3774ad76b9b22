"""Running cells through submitit: SLURM clusters (`--executor slurm`) or submitit's local
executor (`--executor local`, what the tests exercise). Each cell is one job in its own process;
the record comes back as the job's result and the runner appends it like any other, so records
and reports are the same whatever the executor."""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from bench.config import Cell
from bench.errors import BenchError

_REQUIRED_ENV = ("PATH", "HOME", "PYTHONPATH", "LANG")


def run_job(cell_json: dict[str, Any], matrix: str, env: dict[str, str]) -> dict[str, Any]:
    """The job: runs in submitit's process on the node."""
    os.environ.update(env)
    os.environ.pop("BENCH_TTY", None)
    from bench import worker

    return worker.run_cell(Cell.from_json(cell_json), matrix)


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

    def run(self, cell: Cell, run_dir: Path, matrix: str, slot_env: dict[str, str]) -> dict[str, Any]:
        from bench import runner, worker

        folder = run_dir / "submitit"
        executor = self.submitit.AutoExecutor(folder=folder, cluster=self.cluster)
        timeout_min = max(1, math.ceil(cell.settings.timeout_s / 60))
        executor.update_parameters(timeout_min=timeout_min, name=f"bench-{cell.cell_id}", **self.params)
        env = runner.env_for(cell, slot_env)
        started = time.monotonic()
        job = executor.submit(run_job, cell.to_json(), matrix, env)
        try:
            rec = job.result()
        except Exception as exc:  # noqa: BLE001 - a failed job is a record, not a crash
            rec = worker.base_record(cell, matrix)
            rec["finished_at"] = worker.now()
            elapsed = time.monotonic() - started
            timed_out = elapsed >= timeout_min * 60 or "timed-out" in str(exc).lower() or "timeout" in str(exc).lower()
            rec.update(status="timeout" if timed_out else "error",
                       error=f"{self.cluster} job {job.job_id} ended without a record: "
                             f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}")
        rec["executor"] = {"name": self.cluster, "job_id": str(job.job_id), "folder": str(folder)}
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
