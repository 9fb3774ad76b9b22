"""Runs a matrix: one fresh process per cell, a timeout per cell, a record per cell, resume.

A failing, hanging or crashing cell is recorded with its status and reason; the matrix goes on.
"""
from __future__ import annotations

import fnmatch
import json
import multiprocessing
import os
import signal
import sys
import queue
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bench import gpucheck, store, worker
from bench.config import Cell, Matrix
from bench.errors import BenchError
from bench.runlock import RunLock

FAULT_CELLS_ENV = "BENCH_FAULT_CELLS"  # glob of cell names BENCH_FAULT applies to (tests only)


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
                     f"optimizer={s.optimizer} checkpointing={s.gradient_checkpointing}")
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


def env_for(cell: Cell, slot_env: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **slot_env}
    glob = env.get(FAULT_CELLS_ENV)
    if "BENCH_FAULT" in env and glob is not None and not fnmatch.fnmatch(cell.name, glob):
        env.pop("BENCH_FAULT")
    try:
        if sys.stderr.isatty():
            env["BENCH_TTY"] = os.ttyname(sys.stderr.fileno())
    except OSError:
        pass
    return env


class CellLauncher:
    """Starts each cell in a freshly spawned interpreter, so no allocator state, CUDA context or
    thread pool leaks between cells. (Forking from a preloaded server would save the ~6 s of
    imports per cell, but forked cells measured up to 5x slower steps on the CPU here: the
    instrument would distort what it measures.)"""

    def __init__(self) -> None:
        self.ctx = multiprocessing.get_context("spawn")

    def run(self, cell: Cell, run_dir: Path, matrix: str, slot_env: dict[str, str]) -> dict[str, Any]:
        """Run one cell; the record it wrote, or one saying how it ended."""
        logs = run_dir / "logs"
        logs.mkdir(exist_ok=True)
        log_path = logs / f"{cell.cell_id}.log"
        with tempfile.TemporaryDirectory(prefix="bench-cell-") as tmp:
            out_path = Path(tmp) / "record.json"
            proc = self.ctx.Process(target=_cell_main, name=f"cell-{cell.cell_id}", daemon=False,
                                    args=(os.getpid(), cell.to_json(), str(out_path), matrix,
                                          env_for(cell, slot_env), str(log_path)))
            proc.start()
            try:
                proc.join(cell.settings.timeout_s)
            finally:
                timed_out = proc.is_alive()
                if timed_out:
                    _kill_group(proc)
            if out_path.exists() and not timed_out:
                return json.loads(out_path.read_text())
        rec = worker.base_record(cell, matrix)
        rec["finished_at"] = worker.now()
        rec["worker_pid"] = proc.pid
        if timed_out:
            rec.update(status="timeout", error=f"no result after timeout_s = {cell.settings.timeout_s:g} s; "
                                                 f"the cell's processes were killed (log: {log_path})")
        else:
            code = proc.exitcode
            how = f"killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:] if log_path.exists() else []
            rec.update(status="error", error=f"worker {how} before writing a record; log tail: {' | '.join(tail)}")
        return rec


def _cell_main(runner_pid: int, *args: Any) -> None:
    """The cell process: dies with the runner (a SIGKILLed runner must not leave a cell holding the
    GPU for the rerun to measure against), then runs the cell."""
    _die_with_parent(runner_pid)
    worker.entry(*args)


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform != "linux":
        return
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        return
    if os.getppid() != parent_pid:  # the runner died before the line above took effect
        os._exit(1)


def _kill_group(proc: Any) -> None:
    """SIGKILL the cell's session (the cell and anything it started), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()  # it had not yet made its own session
    proc.join()


def run_matrix(matrix: Matrix, cells: list[Cell], run_dir: Path, force: bool, env: dict[str, Any],
               on_record: Callable[[dict[str, Any]], None] | None = None,
               slots: list[dict[str, str]] | None = None, launcher: Any = None,
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
                on_record: Callable[[dict[str, Any]], None] | None, slots: list[dict[str, str]],
                launcher: Any) -> Summary:
    path = run_dir / store.RESULTS
    done: set[str] = set()
    if path.exists() and not force:
        done = {r["cell_id"] for r in store.read_records(path) if r["status"] == "ok"}
    previous = store.read_env(run_dir)
    env["slots"] = slots
    env["invocations"] = [*previous.get("invocations", []), {"command": env["command"], "started_at": env["started_at"]}]
    store.write_env(run_dir, env)
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
            rec = launcher.run(cell, run_dir, matrix.name, slots[slot])
            rec["duration_s"] = time.perf_counter() - t0
            rec["slot"] = {"index": slot, "of": len(slots), "env": slots[slot]}
            store.append_record(run_dir, rec)
        finally:
            free.put(slot)
        with lock:
            summary.ran += 1
            summary.by_status[rec["status"]] = summary.by_status.get(rec["status"], 0) + 1
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
