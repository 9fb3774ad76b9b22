"""Launching a multi-rank cell (settings `strategy` ddp / fsdp, `nproc`, `nnodes`) with torchrun
(`torch.distributed.run`): one process group whose ranks each run bench/exec/rank.py, in a session
of its own, killed whole at the cell's timeout. On one node the rendezvous is torchrun's
`--standalone`; across nodes (a SLURM job, one task per node) it is static, from the job's first
node and each node's index. Whatever happened, the cell ends as one `Record`: rank 0's merged one,
else the record of the rank that failed first, else one saying how torchrun ended.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.exec import rank as rank_entry
from bench.exec import worker
from bench.results.record import Record
from bench.spec import Cell

MASTER_PORT = 29531
STOP_GRACE_S = 15


@dataclass(frozen=True)
class Rendezvous:
    """Where the nodes of a multi-node cell meet: the first node's address and this node's index."""

    master_addr: str
    node_rank: int
    port: int = MASTER_PORT


RANK_MODULE = "bench.exec.rank"


def command(cell: Cell, cell_path: str, out_dir: str, matrix: str, rdzv: Rendezvous | None = None,
            module: str = RANK_MODULE) -> list[str]:
    s = cell.settings
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={s.nnodes}", f"--nproc-per-node={s.nproc}",
           "--max-restarts=0"]
    if s.nnodes == 1 and rdzv is None:
        cmd.append("--standalone")
    else:
        if rdzv is None:
            raise ValueError(f"nnodes = {s.nnodes}: a multi-node cell needs the job's rendezvous")
        cmd += [f"--node-rank={rdzv.node_rank}", f"--master-addr={rdzv.master_addr}", f"--master-port={rdzv.port}"]
    return cmd + ["-m", module, cell_path, out_dir, matrix]


def too_few_gpus(cell: Cell, env: dict[str, str] | None = None) -> str | None:
    """Why the cell cannot run here: more ranks a node than the GPUs its slot sees (CUDA_VISIBLE_DEVICES
    in `env`, else this node's); a machine without CUDA runs its ranks on the CPU, with gloo."""
    import torch

    have = torch.cuda.device_count()  # NVML's count: no CUDA context in the runner
    visible = (env or {}).get("CUDA_VISIBLE_DEVICES")
    if have and visible is not None:
        have = len([d for d in visible.split(",") if d.strip()])
    if 0 < have < cell.settings.nproc:
        return (f"nproc = {cell.settings.nproc} ranks a node need {cell.settings.nproc} GPUs, and this node has "
                f"{have} (visible to CUDA)")
    return None


def run(cell: Cell, matrix: str, env: dict[str, str], log_path: Path, work_dir: str | None = None,
        rdzv: Rendezvous | None = None, module: str = RANK_MODULE) -> Record:
    """Run the cell's ranks on this node; the cell's record (on a multi-node job, what this node saw).
    `module` is what each rank runs (the tests hand in ranks that die or hang)."""
    short = too_few_gpus(cell, env)
    if cell.settings.nnodes > 1 and rdzv is None:
        short = (f"nnodes = {cell.settings.nnodes}: a multi-node cell runs as a SLURM job (--executor slurm), one "
                 "task per node; this executor runs on one machine")
    if short:
        rec = worker.base_record(cell, matrix)
        rec.status, rec.error, rec.finished_at = "unsupported", short, worker.now()
        return rec
    with tempfile.TemporaryDirectory(prefix="bench-ranks-", dir=work_dir) as out_dir:
        cell_path = str(Path(out_dir) / "cell.json")
        Path(cell_path).write_text(json.dumps(cell.to_json()))
        env = {k: v for k, v in env.items() if k != "BENCH_TTY"}
        env.setdefault("OMP_NUM_THREADS", str(cell.settings.threads or 1))  # torchrun's default, said quietly
        timed_out = False
        with open(log_path, "ab") as log:
            # torchrun dies with the runner (set in its process before it runs); the ranks die with torchrun
            proc = subprocess.Popen(command(cell, cell_path, out_dir, matrix, rdzv, module), stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    start_new_session=True, preexec_fn=worker.die_with_parent)
            try:
                code = proc.wait(timeout=cell.settings.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                code = _stop(proc)
        return collect(cell, matrix, Path(out_dir), code, timed_out, log_path)


def _stop(proc: subprocess.Popen) -> int | None:
    """End torchrun and its ranks: SIGTERM first (its agent then stops the ranks, which run in sessions
    of their own), SIGKILL to its session after a grace period; each rank also dies with the agent."""
    try:
        proc.terminate()
        return proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return proc.wait()


def collect(cell: Cell, matrix: str, out_dir: Path, code: int | None, timed_out: bool, log_path: Path) -> Record:
    """The cell's record from what the ranks wrote."""
    merged = out_dir / rank_entry.RECORD
    if merged.exists() and not timed_out:
        return _read(merged)
    ranks = sorted(out_dir.glob("rank*.json"))
    failed = [(json.loads(p.read_text()), int(p.stem[4:])) for p in ranks]
    failed = [(d, r) for d, r in failed if d.get("status") != "ok"]
    world = cell.settings.world_size
    if failed and not timed_out:
        data, first = min(failed, key=lambda item: item[0].get(rank_entry.WROTE_AT, 0))
        rec = _record(data)
        if rec.status != "unsupported" or len(failed) < world:
            rec.error = f"rank {first} of {world}: {rec.error}"
        return rec
    rec = worker.base_record(cell, matrix)
    rec.finished_at = worker.now()
    if timed_out:
        rec.status = "timeout"
        rec.error = (f"no result after timeout_s = {cell.settings.timeout_s:g} s; torchrun and the cell's "
                     f"{world} ranks were killed (log: {log_path})")
        return rec
    rec.error = (f"torchrun {worker.how_it_ended(code)} before rank 0 wrote the record (a rank died); log tail: "
                 f"{worker.log_tail(log_path, 4)}")
    return rec


def _record(data: dict) -> Record:
    data = dict(data)
    data.pop(rank_entry.WROTE_AT, None)
    return Record.from_json(data)


def _read(path: Path) -> Record:
    return _record(json.loads(path.read_text()))
