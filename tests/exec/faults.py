"""Cell process bodies with faults, for `CellLauncher(target=Fault(...))`.

The launcher spawns its target in a fresh interpreter as `target(cell_json, matrix, env, log_path,
out_path)`, exactly as it spawns the worker's entry. A `Fault` picks the cells of one variant and
gives them its fault; every other cell runs through `bench.exec.worker.entry`, as the default
target runs it. Nothing here reaches into the harness: a fault is either a process that ends
badly (writes an error record itself, exits, raises, hangs) or a real cell whose optimizer step
fails inside the real worker (so the worker's own record names the phase and the step).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench.exec import worker
from bench.spec import Cell

KINDS = ("error", "oom", "record", "exit", "raise", "hang")
EXIT_CODE = 3
CHILD_SUFFIX = ".child"  # the hanging cell writes its own child's pid to LOG_PATH + this


@dataclass(frozen=True)
class Fault:
    """kind: error / oom (training step `step`, 0-based, raises inside the real worker), record (the
    process writes an error record and loads nothing), exit (os._exit(EXIT_CODE) before any record),
    raise (an exception escapes the process), hang (sleeps, with a child process of its own)."""

    kind: str
    step: int = 0
    variant: str = "full"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"fault kind {self.kind!r}: one of {', '.join(KINDS)}")

    def __call__(self, cell_json: dict[str, Any], matrix: str, env: dict[str, str], log_path: str,
                 out_path: str) -> None:
        if cell_json["variant"] != self.variant:
            worker.entry(cell_json, out_path, matrix, env, log_path)
            return
        if self.kind in ("error", "oom"):
            _fail_optimizer_step(self.step, self.kind)
            worker.entry(cell_json, out_path, matrix, env, log_path)
            return
        worker.redirect_to_log(log_path, env)
        if self.kind == "record":
            rec = worker.base_record(Cell.from_json(cell_json), matrix)
            rec.error, rec.finished_at = "injected: the cell's process wrote this error record", worker.now()
            worker.write_json(out_path, rec.to_json())
        elif self.kind == "exit":
            print("exiting before any record", flush=True)
            os._exit(EXIT_CODE)
        elif self.kind == "raise":
            raise RuntimeError("injected: an exception escaped the cell's process")
        else:
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(10**6)"])
            with open(log_path + CHILD_SUFFIX, "w") as fh:
                fh.write(str(child.pid))
            time.sleep(10**6)


def _fail_optimizer_step(step: int, kind: str) -> None:
    """In this (fresh) process: AdamW's step number `step` (0-based) raises."""
    import torch

    real = torch.optim.AdamW.step
    calls = {"n": 0}

    def failing(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == step + 1:
            if kind == "oom":
                raise torch.OutOfMemoryError(f"injected out-of-memory at step {step}")
            raise RuntimeError(f"injected fault at step {step}")
        return real(self, *args, **kwargs)

    torch.optim.AdamW.step = failing


def live_processes_in_group(pgid: int) -> list[int]:
    """Pids of the processes of a process group that are alive (zombies do not count: nobody may
    have reaped them yet, but they hold nothing)."""
    out = []
    for stat in _stats():
        pid, state, group = stat
        if group == pgid and state != "Z":
            out.append(pid)
    return out


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _stats() -> list[tuple[int, str, int]]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out.append((int(entry), fields[0], int(fields[2])))
    return out
