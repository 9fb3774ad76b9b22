"""`bench predict`, `bench capacity` and `bench selfcheck`: the verbs that explain and check figures."""
from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path
from typing import Any

from bench.cli.args import positive_int, select_cells
from bench.errors import BenchError, UnsupportedError

GIB = 2**30


def _gib(value: Any) -> str:
    return f"{value / GIB:9.3f}" if isinstance(value, (int, float)) else f"{'-':>9}"


def _prediction_line(name: str, p: dict[str, Any]) -> str:
    managed = f"  (+{p['optimizer_managed_bytes'] / GIB:.3f} managed)" if p["optimizer_managed_bytes"] else ""
    phase = f"  [{p['peak_phase']}]" if p["peak_phase"] else ""
    notes = "".join(f"  note: {n}" for n in p["notes"])
    return (f"{name:<60} {p['trainable_params']:>13,d} {_gib(p['parameters_bytes'])} {_gib(p['gradients_bytes'])} "
            f"{_gib(p['optimizer_bytes'])} {_gib(p['activations_bytes'])} {_gib(p['peak_bytes'])}"
            f"{managed}{phase}{notes}")


def cmd_predict(args: argparse.Namespace) -> int:
    from bench.predict import predict

    _, cells = select_cells(args.matrix, args.only)
    print(f"predicted training memory, GiB (2^30 bytes), for {args.device.upper()}; no weights loaded")
    print(f"{'cell':<60} {'trainable':>13} {'params':>9} {'grads':>9} {'optim':>9} {'activ':>9} {'peak':>9}")
    failed: dict[Any, str] = {}  # a model whose config cannot load fails every cell of it: say so once
    formulas: set[str] = set()
    for cell in cells:
        reason = failed.get(cell.model)
        if reason is None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    p = predict(cell, args.device, padded=args.padded)
            except (UnsupportedError, OSError, ValueError) as exc:
                reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:150]}"
                if isinstance(exc, (UnsupportedError, OSError)) and "not available" in str(exc):
                    failed[cell.model] = reason
        if reason is not None:
            print(f"{cell.name:<60} unsupported: {reason}")
            continue
        formulas.add(p["formula"] or "")
        print(_prediction_line(cell.name, p))
    for f in sorted(x for x in formulas if x):
        print(f"formula: {f}")
    return 0


def cmd_capacity(args: argparse.Namespace) -> int:
    from bench.exec import gpucheck, runner
    from bench.tools import capacity

    budget = capacity.parse_bytes(args.budget)
    matrix, cells = select_cells(args.matrix, args.only)
    if not _cuda():
        raise BenchError("capacity caps torch's CUDA allocator (set_per_process_memory_fraction): it needs a "
                         "CUDA GPU, and this machine has none")
    run_dir = Path(args.out) if args.out else Path("reports") / "runs" / matrix.name
    runner.check_writable(run_dir)
    print(f"capacity of {len(cells)} cell(s) under {budget / GIB:.2f} GiB (2^30 bytes), varying {args.vary}; "
          f"records: {run_dir / capacity.CAPACITY}")
    print(f"note: {capacity.OUTSIDE_CAP}")
    gpucheck.check(args.allow_busy_gpu)  # another process's memory would shrink every budget
    probe = capacity.launcher_probe(run_dir, matrix.name, budget)
    capacity.run_capacity(matrix.name, cells, run_dir, args.vary, budget, args.limit, probe)
    return 0


def cmd_selfcheck(args: argparse.Namespace) -> int:
    from bench.tools import selfcheck

    _, cells = select_cells(args.matrix, args.only)
    if len(cells) != 1:
        names = ", ".join(c.name for c in cells[:5])
        more = ", ..." if len(cells) > 5 else ""
        raise BenchError(f"--only {args.only!r} matches {len(cells)} cells ({names}{more}); "
                         "selfcheck takes exactly one")
    cell = selfcheck.selfcheck_cell(cells[0], args.steps)
    s = cell.settings
    print(f"selfcheck {cell.name}: {args.rounds} round(s) of bare loop vs harness, {s.warmup_steps}+{s.steps} steps, "
          "evaluation off, each run in a fresh process")
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-selfcheck-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = selfcheck.compare(cell, args.rounds, work)
    except RuntimeError as exc:
        raise BenchError(f"selfcheck: {exc}") from None
    print(selfcheck.main_summary(result))
    return 0


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predicted memory per cell (parameters, gradients, optimizer, activations, "
                       "peak); loads no weights")
    p.add_argument("matrix")
    p.add_argument("--only", help="glob over cell names or variant names")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                   help="where the cells would run (attention kernels and paging differ); default cuda")
    p.add_argument("--padded", action="store_true", help="rows shorter than seq_len (natural-text tasks): "
                   "attention runs with a mask (default: rows fill seq_len, as synthetic ones do)")
    p.set_defaults(func=cmd_predict)
    c = sub.add_parser("capacity", help="largest batch size (or seq_len) per cell that trains under a memory budget "
                       "(CUDA)")
    c.add_argument("matrix")
    c.add_argument("--budget", required=True, help="memory budget, e.g. 24GiB (2^30) or 80GB (10^9)")
    c.add_argument("--vary", choices=["batch_size", "seq_len"], default="batch_size")
    c.add_argument("--only", help="glob over cell names or variant names")
    c.add_argument("--limit", type=positive_int, help="largest value to try (default: 4096 for batch_size, the "
                   "model's position limit for seq_len)")
    c.add_argument("--out", help="run directory for capacity.jsonl and the probes' logs (default: reports/runs/MATRIX)")
    c.add_argument("--allow-busy-gpu", action="store_true", help="probe even if other processes hold GPU memory")
    c.set_defaults(func=cmd_capacity)
    s = sub.add_parser("selfcheck", help="the harness's overhead: one cell as a bare loop and through the harness")
    s.add_argument("matrix")
    s.add_argument("--only", required=True, help="selects exactly one cell (a glob over cell or variant names)")
    s.add_argument("--rounds", type=positive_int, default=3)
    s.add_argument("--steps", type=positive_int, help="timed steps (default: the cell's)")
    s.add_argument("--out", help="folder for the runs' logs (default: a new temporary folder)")
    s.set_defaults(func=cmd_selfcheck)
