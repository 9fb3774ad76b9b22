"""`bench predict`, `capacity`, `selfcheck` and `explain`: the verbs that explain and check figures."""
from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path
from typing import Any

from bench.cli.args import positive_int, select_cells
from bench.errors import BenchError, UnsupportedError
from bench.results.record import Record

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
    if args.vary == "gpus":
        return _gpus_needed(cells, budget, args.limit or 512, args.gpus_per_node)
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


def _gpus_needed(cells: list[Any], budget: int, limit: int, per_node: int) -> int:
    from bench.tools import capacity

    print(f"GPUs of {budget / GIB:.2f} GiB (2^30 bytes) each that a cell needs, by the memory model (predicted "
          f"per-rank peaks, torch's allocator; the CUDA context, ~0.5 GiB, comes on top); {per_node} GPUs a node")
    for cell in cells:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                out = capacity.gpus_needed(cell, budget, limit, per_node)
            except (UnsupportedError, OSError, ValueError) as exc:
                print(f"{cell.name:<60} unsupported: {type(exc).__name__}: {str(exc).splitlines()[0][:150]}")
                continue
        tried = ", ".join(f"{t['gpus']}: {_gib(t['peak_bytes']).strip()}" for t in out["tried"])
        if out["gpus"] is None:
            print(f"{cell.name:<60} does not fit: {out['note']} (per-rank peak GiB by GPUs: {tried})")
        else:
            print(f"{cell.name:<60} {out['gpus']} GPU(s): strategy {out['strategy']}, nproc {out['nproc']}, "
                  f"nnodes {out['nnodes']}, {_gib(out['peak_bytes']).strip()} GiB a rank (tried {tried})")
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


def _pick(run: str, glob: str | None) -> tuple[Any, dict[str, Any]]:
    """The one cell of run folder `run` whose name or variant matches `glob` (any, if the run has one)."""
    import fnmatch

    from bench.results import store

    records = list(store.latest_by_cell(store.read_results(Path(run)).records).values())
    found = [r for r in records
             if not glob or fnmatch.fnmatch(str(r.name), glob) or fnmatch.fnmatch(str(r.variant), glob)]
    if len(found) != 1:
        names = ", ".join(str(r.name) for r in found[:5]) + (", ..." if len(found) > 5 else "")
        raise BenchError(f"{run}: {'--cell ' + repr(glob) if glob else 'the run'} matches {len(found)} cells"
                         f"{' (' + names + ')' if names else ''}; explain takes exactly one (give --cell)")
    return found[0], store.read_env(Path(run))


def _setting(text: str) -> tuple[str, Any]:
    import tomllib

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise BenchError(f"--set {text!r}: expected KEY=VALUE, e.g. --set seq_len=1024")
    try:
        return key.strip(), tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return key.strip(), value.strip()  # a bare word: a string


def cmd_explain(args: argparse.Namespace) -> int:
    import dataclasses as dc

    from bench import schema
    from bench.spec import Settings
    from bench.tools import explain

    rec, env = _pick(args.run, args.cell)
    if args.other is None and args.figure_gib is None:
        print(explain.one(rec).text())
        return 0
    if args.other is not None and args.figure_gib is not None:
        raise BenchError("give OTHER (a second run) or --figure-gib (a figure measured elsewhere), not both")
    if args.other is not None:
        other, other_env = _pick(args.other, args.other_cell or args.cell)
        print(explain.two(rec, other, env, other_env).text())
        return 0
    overrides = dict(_setting(t) for t in args.set)
    settings = schema.build(Settings, {**(rec.settings or {}), **overrides}, "--set")  # validated: names the choices
    figure = Record.from_json({**rec.to_json(), "name": f"the figure given ({args.figure_gib} GiB)",
                               "settings": dc.asdict(settings)})
    print(explain.two(rec, figure, env, None, b_measured=args.figure_gib * GIB).text())
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
                       "(CUDA), or how many GPUs of that size a cell needs (--vary gpus, predicted)")
    c.add_argument("matrix")
    c.add_argument("--budget", required=True, help="memory budget, e.g. 24GiB (2^30) or 80GB (10^9)")
    c.add_argument("--vary", choices=["batch_size", "seq_len", "gpus"], default="batch_size",
                   help="gpus: the fewest GPUs of --budget each (sharded with FSDP past one) that the memory model "
                   "says the cell fits on; predicted, so no GPU is needed")
    c.add_argument("--gpus-per-node", type=positive_int, default=8, help="with --vary gpus: GPUs a node")
    c.add_argument("--only", help="glob over cell names or variant names")
    c.add_argument("--limit", type=positive_int, help="largest value to try (default: 4096 for batch_size, the "
                   "model's position limit for seq_len)")
    c.add_argument("--out", help="run directory for capacity.jsonl and the probes' logs (default: reports/runs/MATRIX)")
    c.add_argument("--allow-busy-gpu", action="store_true", help="probe even if other processes hold GPU memory")
    c.set_defaults(func=cmd_capacity)
    e = sub.add_parser("explain", help="why a cell's memory peak is what it is, part by part; or why two "
                       "cells' (or a cell's and a figure's) peaks differ, setting by setting")
    e.add_argument("run", help="a run folder")
    e.add_argument("other", nargs="?", help="a second run folder: explain the difference from RUN's cell")
    e.add_argument("--cell", help="glob over cell or variant names: the one cell of RUN (and OTHER)")
    e.add_argument("--other-cell", help="glob choosing OTHER's cell, where it differs from --cell")
    e.add_argument("--figure-gib", type=float, help="a peak measured elsewhere (GiB, 2^30 bytes) to explain "
                   "against RUN's cell; --set gives the settings it was measured with")
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting of that figure that differs from the cell's (repeat it)")
    e.set_defaults(func=cmd_explain)
    s = sub.add_parser("selfcheck", help="the harness's overhead: one cell as a bare loop and through the harness")
    s.add_argument("matrix")
    s.add_argument("--only", required=True, help="selects exactly one cell (a glob over cell or variant names)")
    s.add_argument("--rounds", type=positive_int, default=3)
    s.add_argument("--steps", type=positive_int, help="timed steps (default: the cell's)")
    s.add_argument("--out", help="folder for the runs' logs (default: a new temporary folder)")
    s.set_defaults(func=cmd_selfcheck)
