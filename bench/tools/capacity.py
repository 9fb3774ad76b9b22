"""Capacity: the largest batch size (or sequence length) of a cell that trains under a memory budget.

Each probe is the cell with the varied setting changed and a few steps, run in a fresh process
(the runner's CellLauncher) with torch's allocator capped at the budget
(`torch.cuda.set_per_process_memory_fraction`, through BENCH_MEMORY_CAP_BYTES, which the worker
reads). The search grows the value exponentially until a probe runs out of memory, then bisects.
The cap binds torch's caching allocator only: the CUDA context and the managed memory of paged
optimizers lie outside it. Varying seq_len past the length of a task's texts pads the rows; padded
rows need an attention mask, which can move attention to another kernel (synthetic rows hold about
2,600 byte-tokenizer tokens).

Every probe keeps torch's figures and the record's headline peak (bench/results/peaks.py: torch peak
allocated plus managed optimizer state), and the search result the headline peak of its largest
fitting probe (`best_peak_bytes`): for a paged optimizer it may exceed the budget, the managed part
lying outside the cap.
"""
from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any, Callable

from bench.errors import BenchError, ConfigError
from bench.measure.memory import CAP_ENV, OUTSIDE_CAP
from bench.results import store
from bench.results.peaks import headline_peak
from bench.results.record import Record
from bench.results.values import GIB
from bench.spec import Cell

CAPACITY = "capacity.jsonl"
VARY = ("batch_size", "seq_len")
PROBE_WARMUP, PROBE_STEPS = 1, 2  # the second step is the first with optimizer state: the steady peak
_UNITS = {"": 1, "b": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
          "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}


class ProbeError(BenchError):
    """A probe ended neither ok nor out of memory: the search cannot read it as fits / does not fit."""


def parse_bytes(text: str) -> int:
    """'24GiB' (2^30), '24GB' (10^9), '512 MiB', '1e9' (bytes)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _UNITS:
        raise ConfigError(f"--budget {text!r}: expected a size like 24GiB, 80GB or 512MiB "
                          f"(units: {', '.join(u for u in _UNITS if u)})")
    value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ConfigError(f"--budget {text!r} must be > 0")
    return value


def search(fits: Callable[[int], bool], start: int, limit: int) -> tuple[int, list[tuple[int, bool]]]:
    """The largest value in [1, limit] for which `fits` holds, assuming it holds below any value
    that fits: doubling from `start` until a value fails (or `limit` fits), then bisection.
    Returns (best, probes in order); best is 0 when not even 1 fits."""
    if limit < 1:
        raise ValueError("limit must be >= 1")
    probes: list[tuple[int, bool]] = []

    def probe(v: int) -> bool:
        ok = fits(v)
        probes.append((v, ok))
        return ok

    start = min(max(1, start), limit)
    lo, hi = 0, None  # lo fits (0: nothing known to fit), hi does not fit
    if probe(start):
        lo = start
        while lo < limit:
            nxt = min(2 * lo, limit)
            if probe(nxt):
                lo = nxt
            else:
                hi = nxt
                break
        if hi is None:
            return lo, probes
    else:
        hi = start
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if probe(mid):
            lo = mid
        else:
            hi = mid
    return lo, probes


def probe_cell(cell: Cell, vary: str, value: int) -> Cell:
    """The cell with the varied setting at `value`, a couple of steps and no evaluation."""
    s = dataclasses.replace(cell.settings, **{vary: value}, steps=PROBE_STEPS, warmup_steps=PROBE_WARMUP,
                            eval_examples=0)
    return dataclasses.replace(cell, settings=s)


def default_limit(cell: Cell, vary: str) -> int:
    """Batch sizes up to 4096; sequence lengths up to the model's position limit."""
    if vary == "batch_size":
        return 4096
    from bench.catalog import models

    config = models.load_config(cell.model)
    return int(getattr(config, "max_position_embeddings", 0) or 131072)


def append(run_dir: Path, record: dict[str, Any]) -> None:
    """One line per cell in RUN_DIR/capacity.jsonl, appended as results are (locked, fsynced)."""
    store.append_line(Path(run_dir) / CAPACITY, record)


def cell_capacity(cell: Cell, vary: str, budget: int, limit: int,
                  probe: Callable[[Cell, str, int], Record]) -> dict[str, Any]:
    """Search one cell; the record that capacity.jsonl keeps (probes included)."""
    tried: list[dict[str, Any]] = []

    def fits(value: int) -> bool:
        rec = probe(probe_cell(cell, vary, value), vary, value)
        peak, source = headline_peak(rec)
        tried.append({"value": value, "status": rec.status, "peak_allocated_bytes": rec.memory.peak_allocated_bytes,
                      "peak_reserved_bytes": rec.memory.peak_reserved_bytes,
                      "peak_bytes": None if math.isnan(peak) else int(peak), "peak_source": source, "error": rec.error})
        if rec.status == "ok":
            return True
        if rec.status == "oom":
            return False
        raise ProbeError(f"probe {vary} = {value} ended {rec.status}: {rec.error}")

    out: dict[str, Any] = {"cell_id": cell.cell_id, "name": cell.name, "vary": vary, "budget_bytes": budget,
                           "start": getattr(cell.settings, vary), "limit": limit, "best": None,
                           "best_peak_bytes": None, "status": "ok", "error": None, "probes": tried,
                           "note": OUTSIDE_CAP}
    try:
        out["best"], _ = search(fits, getattr(cell.settings, vary), limit)
    except ProbeError as exc:
        out.update(status="error", error=str(exc))
    out["best_peak_bytes"] = next((p["peak_bytes"] for p in tried if p["value"] == out["best"] and p["status"] == "ok"),
                                  None)
    if out["best"] == limit:
        out["note"] += f"; the limit ({limit}) fits: the capacity may be larger"
    return out


def launcher_probe(run_dir: Path, matrix: str, budget: int,
                   say: Callable[[str], None] = print) -> Callable[[Cell, str, int], Record]:
    """Probes as real cells: each a fresh process (the runner's launcher) with the allocator capped."""
    from bench.exec.launchers import CellLauncher

    launcher = CellLauncher()

    def probe(cell: Cell, vary: str, value: int) -> Record:
        rec = launcher.run(cell, run_dir, matrix, {CAP_ENV: str(budget)})
        say(f"  probe {cell.name}: {rec.status}")
        return rec
    return probe


def run_capacity(matrix: str, cells: list[Cell], run_dir: Path, vary: str, budget: int, limit: int | None,
                 probe: Callable[[Cell, str, int], Record], say: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Search every cell under the run directory's lock, one line each in capacity.jsonl."""
    from bench.exec.lock import RunLock
    from bench.exec.worker import now

    out = []
    with RunLock(run_dir):  # one writer per run directory, as `bench run` keeps it
        for cell in cells:
            started = now()
            rec = cell_capacity(cell, vary, budget, limit or default_limit(cell, vary), probe)
            rec.update(matrix=matrix, started_at=started, finished_at=now())
            append(run_dir, rec)
            best = rec["best"] if rec["status"] == "ok" else f"error ({rec['error']})"
            if rec["best_peak_bytes"] is not None:
                best = f"{best} (headline peak {rec['best_peak_bytes'] / GIB:.4f} GiB)"
            say(f"{cell.name:<60} largest {vary} = {best}  ({len(rec['probes'])} probes)")
            out.append(rec)
    return out


GPUS_PER_NODE = 8


def ranks_cell(cell: Cell, world: int, per_node: int = GPUS_PER_NODE) -> Cell:
    """The cell over `world` ranks: as it is on one, sharded with FSDP on several (or the cell's own
    strategy, if it names one), `per_node` ranks to a node."""
    if world == 1:
        s = dataclasses.replace(cell.settings, strategy="single", nproc=1, nnodes=1, fsdp_cpu_offload=False)
    else:
        if world > per_node and world % per_node:
            raise ValueError(f"{world} GPUs do not fill nodes of {per_node}")
        strategy = cell.settings.strategy if cell.settings.distributed else "fsdp"
        nodes = -(-world // per_node)
        s = dataclasses.replace(cell.settings, strategy=strategy, nproc=min(world, per_node), nnodes=nodes)
    return dataclasses.replace(cell, settings=s)


def gpus_needed(cell: Cell, budget: int, limit: int = 512, per_node: int = GPUS_PER_NODE,
                predict: Callable[[Cell, str], dict[str, Any]] | None = None) -> dict[str, Any]:
    """The fewest GPUs of `budget` bytes each whose predicted per-rank peak fits, by the memory model
    (no GPU needed): 1, 2, 4, ... up to a node of `per_node`, then 2, 4, 8, ... whole nodes, up to `limit`."""
    if predict is None:
        from bench.predict import predict as predict_fn

        predict = predict_fn
    tried: list[dict[str, Any]] = []
    worlds = sorted({w for w in (2**k for k in range(12)) if w < per_node} | {per_node})  # in a node: 1, 2, 4, ...
    worlds += [per_node * 2**k for k in range(1, 12)]  # then whole nodes: 2, 4, 8, ... of them
    note = f"no world size up to {limit} fits by the memory model"
    for world in (w for w in worlds if w <= limit):
        ranked = ranks_cell(cell, world, per_node)
        p = predict(ranked, "cuda")
        peak = p.get("peak_bytes")
        tried.append({"gpus": world, "strategy": ranked.settings.strategy, "peak_bytes": peak})
        if peak is not None and peak <= budget:
            return {"name": cell.name, "gpus": world, "nproc": ranked.settings.nproc, "nnodes": ranked.settings.nnodes,
                    "strategy": ranked.settings.strategy, "peak_bytes": peak, "budget_bytes": budget, "tried": tried}
        if peak is None or (ranked.settings.strategy == "ddp" and world > 1):
            # no prediction, or DDP, which replicates: more GPUs never lower a rank's peak
            note = "more GPUs do not lower a rank's predicted peak (ddp replicates the model) or there is no prediction"
            break
    return {"name": cell.name, "gpus": None, "budget_bytes": budget, "tried": tried, "note": note}
