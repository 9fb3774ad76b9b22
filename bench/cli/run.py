"""`bench run`, `report`, `compare`, `baseline` and `list`: running matrices and reading their results."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bench.cli.args import positive_int, select_cells, slots
from bench.errors import BenchError
from bench.results.record import Record

if TYPE_CHECKING:
    from bench.exec.runner import Summary


def _fmt_record(rec: Record) -> str:
    bits = [f"{rec.status:<11}", rec.name or rec.cell_id or ""]
    if rec.time.step_s_median is not None:
        bits.append(f"{rec.time.step_s_median * 1e3:.1f} ms/step")
    if rec.quality.accuracy is not None:
        bits.append(f"acc {rec.quality.accuracy:.3f}")
    if rec.error:
        bits.append(f"({rec.error.splitlines()[0][:160]})")
    return "  ".join(bits)


def cmd_run(args: argparse.Namespace) -> int:
    from bench.exec import runner

    matrix, cells = select_cells(args.matrix, args.only)
    if args.dry_run:
        print("\n".join(runner.plan_lines(matrix, cells)))
        return 0
    from bench.exec import environment

    run_dir = Path(args.out) if args.out else Path("reports") / "runs" / matrix.name
    env = environment.collect(sys.argv)
    env["matrix"] = {"name": matrix.name, "path": str(matrix.path), "only": args.only}
    print(f"running {len(cells)} cell(s) of matrix {matrix.name!r} into {run_dir}", flush=True)

    def show(rec: Record) -> None:
        print(_fmt_record(rec), flush=True)

    worker_slots = slots(args, matrix.jobs)
    launcher = None
    if args.executor != "process":
        from bench.exec import launchers

        params = launchers.slurm_params(args.partition, args.time, args.gpus_per_node, args.cpus_per_task,
                                        args.mem_gb, args.slurm_arg or []) if args.executor == "slurm" else {}
        launcher = launchers.SubmititLauncher(args.executor, params)
        if args.executor == "slurm" and not args.jobs:
            worker_slots = [{} for _ in cells]  # submit every cell at once; the scheduler queues them
    env["executor"] = args.executor
    if args.peak_tflops is not None:
        from bench.measure.flops import PEAK_ENV

        if args.peak_tflops <= 0:
            raise BenchError(f"--peak-tflops {args.peak_tflops:g} must be > 0 (the GPU's dense bf16 peak in TFLOP/s)")
        os.environ[PEAK_ENV] = repr(args.peak_tflops)  # the cells inherit it
        env["peak_tflops"] = args.peak_tflops
    summary = runner.run_matrix(matrix, cells, run_dir, args.force, env, show, worker_slots, launcher,
                                args.allow_busy_gpu)
    counts = ", ".join(f"{n} {s}" for s, n in sorted((summary.by_status or {}).items())) or "nothing"
    print(f"done: ran {summary.ran} ({counts}); skipped {summary.skipped} already ok. "
          f"Results: {run_dir / 'results.jsonl'}; report: python -m bench report {run_dir}")
    return _exit_code(summary, args.strict)


# A cell that ended so did not give its answer; `unsupported` is one (the combination cannot run here).
FAILED = ("error", "oom", "timeout")


def _exit_code(summary: Summary, strict: bool) -> int:
    """1 when no cell is `ok` (skipped cells were already), or with --strict when any cell failed; else 0."""
    by_status = summary.by_status or {}
    if not by_status.get("ok", 0) + summary.skipped:
        print("failed: no cell ended ok (exit 1)", file=sys.stderr)
        return 1
    failed = {s: by_status[s] for s in FAILED if by_status.get(s)}
    if strict and failed:
        said = ", ".join(f"{n} {s}" for s, n in failed.items())
        print(f"failed: --strict and {said} (exit 1)", file=sys.stderr)
        return 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bench import report

    formats = tuple(f.strip() for f in args.format.split(",")) if args.format else report.FORMATS
    out = report.render(Path(args.run_dir), formats)
    print(f"report written to {out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from bench.results import compare

    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip()) if args.metrics else compare.METRICS
    result = compare.compare(Path(args.baseline), Path(args.current), compare.parse_percent(args.time_tol),
                             compare.parse_percent(args.mem_tol), float(args.acc_tol), metrics)
    print(result.markdown)
    return result.exit_code


def cmd_baseline(args: argparse.Namespace) -> int:
    from bench.results import compare

    out = compare.save_baseline(Path(args.run_dir), args.name)
    print(f"baseline {args.name!r} saved to {out}; commit it to gate later runs")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from bench import schema
    from bench.catalog import models, tasks
    from bench.config import builtin_matrices
    from bench.registry import load_methods

    print("methods:")
    for name, cls in load_methods().items():
        origin = "" if (cls.origin or "").startswith("methods.") else f"  [plugin: {cls.origin}]"
        print(f"  {name:<16} {cls.description}{origin}")
        for opt, tp, default in schema.describe(cls.Config):
            print(f"      {opt}: {tp} = {default!r}")
    print("models (built-in; any hub id 'org/name' or local folder also works):")
    for name, m in models.BUILTIN.items():
        print(f"  {name:<16} {m.description}")
    print("tasks:")
    for name, cls in tasks.registry().items():
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        print(f"  {name:<16} {doc}")
        for opt, tp, default in schema.describe(cls):
            print(f"      {opt}: {tp} = {default!r}")
    print("matrices: " + ", ".join(builtin_matrices()))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="run a matrix (a built-in name or a TOML file)")
    r.add_argument("matrix")
    r.add_argument("--out", help="run directory (default: reports/runs/MATRIX); rerunning into it resumes")
    r.add_argument("--force", action="store_true", help="rerun cells already recorded ok")
    r.add_argument("--only", action="append",
                   help="glob over cell names (model/variant/task/bBxS/seedN) or variant names; "
                        "repeat it to run the cells matching any of them")
    r.add_argument("--dry-run", action="store_true", help="validate and print the plan; load nothing")
    r.add_argument("--strict", action="store_true",
                   help="exit 1 if any cell ends error, oom or timeout (without it: only if no cell ends ok)")
    r.add_argument("--gpus", help="'all' or indices like 0,1: one worker per GPU, cells spread across them")
    r.add_argument("--allow-busy-gpu", action="store_true",
                   help="run even if other processes hold GPU memory (recorded in env.json)")
    r.add_argument("--executor", choices=["process", "local", "slurm"], default="process",
                   help="process: a spawned process per cell (default); local / slurm: a submitit job per cell")
    r.add_argument("--partition", help="SLURM partition (--executor slurm)")
    r.add_argument("--time", type=positive_int, help="SLURM time limit in minutes (default: the cell's timeout)")
    r.add_argument("--gpus-per-node", type=positive_int, default=None, help="SLURM GPUs per job")
    r.add_argument("--cpus-per-task", type=positive_int, default=None, help="SLURM CPUs per job")
    r.add_argument("--mem-gb", type=positive_int, default=None, help="SLURM memory per job in GB")
    r.add_argument("--slurm-arg", action="append", metavar="KEY=VALUE", help="any other submitit slurm_* parameter")
    r.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak for MFU (default: from the "
                   "table of known GPUs)")
    r.add_argument("--jobs", type=positive_int, help="cells run at once (default: the matrix's jobs, else 1); "
                   "step times of concurrent cells are not for comparison")
    r.set_defaults(func=cmd_run)
    rp = sub.add_parser("report", help="render tables and charts from a run directory")
    rp.add_argument("run_dir")
    rp.add_argument("--format", help="comma-separated subset of md,csv,tex,html,png,svg,pdf")
    rp.set_defaults(func=cmd_report)
    c = sub.add_parser("compare", help="compare a run against a baseline; exit 1 on a regression")
    c.add_argument("baseline")
    c.add_argument("current")
    c.add_argument("--time-tol", default="5%")
    c.add_argument("--mem-tol", default="2%")
    c.add_argument("--acc-tol", default="1.0", help="accuracy drop in percentage points")
    c.add_argument("--metrics", help="comma-separated subset of time,memory,accuracy,status to judge (default: all)")
    c.set_defaults(func=cmd_compare)
    b = sub.add_parser("baseline", help="copy a run's results into reports/baselines/NAME")
    b.add_argument("run_dir")
    b.add_argument("--name", required=True)
    b.set_defaults(func=cmd_baseline)
    lp = sub.add_parser("list", help="registered methods, built-in models, tasks and matrices")
    lp.set_defaults(func=cmd_list)
