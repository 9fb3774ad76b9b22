"""Runs a matrix: one process per cell (through a launcher), a timeout per cell, a record per cell,
resume. A failing, hanging or crashing cell is recorded with its status and reason; the matrix goes on.
What is decided once per run is decided here, before any cell runs, and written to env.json: the
forgetting text (handed to every cell), and what produced the records (stamped on each).
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from bench.config import Matrix
from bench.errors import BenchError
from bench.exec import environment, gpucheck
from bench.exec.launchers import CellLauncher
from bench.exec.lock import RunLock
from bench.results import store
from bench.results.record import Record
from bench.scenarios import forgetting
from bench.spec import RECIPE_DEFAULTS, Cell


class Launcher(Protocol):
    def run(self, cell: Cell, run_dir: Path, matrix: str, slot_env: dict[str, str]) -> Record: ...


@dataclass
class Summary:
    run_dir: Path
    ran: int = 0
    skipped: int = 0
    by_status: dict[str, int] | None = None


def plan_lines(matrix: Matrix, cells: list[Cell]) -> list[str]:
    lines = [f"matrix {matrix.name} ({matrix.path}): {len(cells)} cell(s)"]
    for c in cells:
        s = c.settings
        lines.append(f"  {c.cell_id}  {c.name}  method={c.method.method} {json.dumps(c.method.options)} "
                     f"steps={s.warmup_steps}+{s.steps} lr={s.lr:g} precision={s.precision} "
                     f"optimizer={s.optimizer} checkpointing={s.gradient_checkpointing}"
                     + "".join(f" {k}={v}" for k, v in c.identity()["settings"].items() if k in RECIPE_DEFAULTS))
    return lines


MIN_FREE_BYTES = 64 * 2**20


def check_writable(run_dir: Path) -> None:
    """A clear error before any cell runs if results could not be written."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-test-") as fh:
            fh.write(b"x" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise BenchError(f"output directory {run_dir} is not writable: {exc.strerror or exc}") from None
    free = shutil.disk_usage(run_dir).free
    if free < MIN_FREE_BYTES:
        raise BenchError(f"output directory {run_dir} has only {free / 2**20:.1f} MiB free "
                         f"(at least {MIN_FREE_BYTES // 2**20} MiB needed for results and logs)")


def run_matrix(matrix: Matrix, cells: list[Cell], run_dir: Path, force: bool, env: dict[str, Any],
               on_record: Callable[[Record], None] | None = None,
               slots: list[dict[str, str]] | None = None, launcher: Launcher | None = None,
               allow_busy_gpu: bool = False) -> Summary:
    """Run the cells not yet recorded `ok`. Each slot (its own environment overrides, e.g. a
    CUDA_VISIBLE_DEVICES) runs one cell at a time; with one slot the cells run one after another.
    The run directory is locked for the whole run; a busy GPU is refused before any cell runs."""
    slots = slots or [{}]
    check_writable(run_dir)
    with RunLock(run_dir) as lock:
        if lock.took_over:
            print(f"note: took over the stale lock of a run that died (pid {lock.took_over.get('pid')})",
                  file=sys.stderr, flush=True)
        env["gpu_check"] = gpucheck.check(allow_busy_gpu)
        return _run_locked(matrix, cells, run_dir, force, env, on_record, slots, launcher or CellLauncher())


def _run_locked(matrix: Matrix, cells: list[Cell], run_dir: Path, force: bool, env: dict[str, Any],
                on_record: Callable[[Record], None] | None, slots: list[dict[str, str]],
                launcher: Launcher) -> Summary:
    path = run_dir / store.RESULTS
    done: set[str] = set()
    if path.exists() and not force:
        done = {r.cell_id for r in store.read_records(path) if r.ok}
    previous = store.read_env(run_dir)
    env["slots"] = slots
    text = forgetting.choose_text(run_dir)
    env["general_text"] = text.to_json()
    env["invocations"] = [*previous.get("invocations", []), {"command": env["command"], "started_at": env["started_at"],
                                                             "general_text": text.source}]
    store.write_env(run_dir, env)
    run_env = {forgetting.CHOICE_ENV: json.dumps(text.to_json())}  # every cell, whatever its slot
    provenance = environment.provenance(env)
    summary = Summary(run_dir, by_status={})
    todo = [c for c in cells if c.cell_id not in done]
    summary.skipped = len(cells) - len(todo)
    bar = _matrix_bar(len(todo), matrix.name)
    lock = threading.Lock()
    free: queue.Queue[int] = queue.Queue()
    for i in range(len(slots)):
        free.put(i)

    def one(cell: Cell) -> None:
        slot = free.get()
        try:
            t0 = time.perf_counter()
            rec = launcher.run(cell, run_dir, matrix.name, {**slots[slot], **run_env})
            rec.duration_s = time.perf_counter() - t0
            rec.slot.set(index=slot, of=len(slots), env=slots[slot])
            rec.provenance.set(**provenance)
            store.append_record(run_dir, rec)
        finally:
            free.put(slot)
        with lock:
            summary.ran += 1
            summary.by_status[rec.status] = summary.by_status.get(rec.status, 0) + 1
            if on_record:
                on_record(rec)
            if bar is not None:
                bar.update(1)

    try:
        if len(slots) == 1:
            for cell in todo:
                if bar is not None:
                    bar.set_postfix_str(cell.name)
                one(cell)
        else:
            with ThreadPoolExecutor(max_workers=len(slots), thread_name_prefix="slot") as pool:
                for future in [pool.submit(one, cell) for cell in todo]:
                    future.result()
    finally:
        if bar is not None:
            bar.close()
    return summary


def _matrix_bar(total: int, name: str) -> Any:
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=name, unit="cell", position=0, dynamic_ncols=True)
