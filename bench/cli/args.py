"""Argument helpers the verbs share: types, cell selection, worker slots."""
from __future__ import annotations

import argparse
import os
from typing import Any

from bench.errors import BenchError


def positive_int(text: str) -> int:
    """argparse type: a positive integer."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def select_cells(matrix_name: str, only: str | list[str] | None) -> tuple[Any, list[Any]]:
    """(matrix, its cells matching --only, or any of several); an error when none matches."""
    from bench import config

    matrix = config.load_matrix(matrix_name)
    cells = matrix.select(only)
    if not cells:
        said = " ".join(f"--only {g!r}" for g in ([only] if isinstance(only, str) else only or []))
        raise BenchError(f"{said} matches no cell of matrix {matrix.name!r}")
    return matrix, cells


def slots(args: argparse.Namespace, matrix_jobs: int) -> list[dict[str, str]]:
    """One environment per concurrent worker: a GPU each with --gpus, else --jobs copies."""
    if args.gpus:
        ids = gpu_ids(args.gpus)
        print(f"one worker per GPU: {', '.join(ids)}", flush=True)
        return [{"CUDA_VISIBLE_DEVICES": i} for i in ids]
    jobs = args.jobs or matrix_jobs
    if jobs > 1:
        print(f"note: {jobs} cells run at once; their step times contend for the machine and are not "
              "for comparison", flush=True)
    return [{} for _ in range(jobs)]


def gpu_ids(spec: str) -> list[str]:
    if spec != "all":
        ids = [p.strip() for p in spec.split(",") if p.strip()]
        if not ids or not all(p.isdigit() for p in ids):
            raise BenchError(f"--gpus {spec!r}: expected 'all' or GPU indices like 0,1,3")
        return ids
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [p.strip() for p in visible.split(",") if p.strip()]
    try:
        import pynvml

        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
    except Exception:  # noqa: BLE001 - no driver
        count = 0
    if count == 0:
        raise BenchError("--gpus all: no GPU found (NVML sees none)")
    return [str(i) for i in range(count)]
