"""Command line: `python -m bench VERB ...` and the `ft-bench` console script."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from bench.errors import BenchError

VERBS = ("run", "report", "compare", "baseline", "list", "predict", "capacity", "selfcheck")


def _fmt_record(rec: dict[str, Any]) -> str:
    t = rec.get("time") or {}
    q = rec.get("quality") or {}
    bits = [f"{rec['status']:<11}", rec["name"]]
    if t.get("step_s_median") is not None:
        bits.append(f"{t['step_s_median'] * 1e3:.1f} ms/step")
    if q.get("accuracy") is not None:
        bits.append(f"acc {q['accuracy']:.3f}")
    if rec.get("error"):
        bits.append(f"({rec['error'].splitlines()[0][:160]})")
    return "  ".join(bits)


def cmd_run(args: argparse.Namespace) -> int:
    from bench import config, runner

    matrix = config.load_matrix(args.matrix)
    cells = matrix.select(args.only)
    if not cells:
        raise BenchError(f"--only {args.only!r} matches no cell of matrix {matrix.name!r}")
    if args.dry_run:
        print("\n".join(runner.plan_lines(matrix, cells)))
        return 0
    from bench import envinfo

    run_dir = Path(args.out) if args.out else Path("reports") / "runs" / matrix.name
    env = envinfo.collect(sys.argv)
    env["matrix"] = {"name": matrix.name, "path": str(matrix.path), "only": args.only}
    print(f"running {len(cells)} cell(s) of matrix {matrix.name!r} into {run_dir}", flush=True)

    def show(rec: dict[str, Any]) -> None:
        print(_fmt_record(rec), flush=True)

    slots = _slots(args, matrix.jobs)
    launcher = None
    if args.executor != "process":
        from bench import executors

        params = executors.slurm_params(args.partition, args.time, args.gpus_per_node, args.cpus_per_task,
                                        args.mem_gb, args.slurm_arg or []) if args.executor == "slurm" else {}
        launcher = executors.SubmititLauncher(args.executor, params)
        if args.executor == "slurm" and not args.jobs:
            slots = [{} for _ in cells]  # submit every cell at once; the scheduler queues them
    env["executor"] = args.executor
    if args.peak_tflops is not None:
        from bench.flops import PEAK_ENV

        if args.peak_tflops <= 0:
            raise BenchError(f"--peak-tflops {args.peak_tflops:g} must be > 0 (the GPU's dense bf16 peak in TFLOP/s)")
        os.environ[PEAK_ENV] = repr(args.peak_tflops)  # the cells inherit it
        env["peak_tflops"] = args.peak_tflops
    summary = runner.run_matrix(matrix, cells, run_dir, args.force, env, show, slots, launcher, args.allow_busy_gpu)
    counts = ", ".join(f"{n} {s}" for s, n in sorted((summary.by_status or {}).items())) or "nothing"
    print(f"done: ran {summary.ran} ({counts}); skipped {summary.skipped} already ok. "
          f"Results: {run_dir / 'results.jsonl'}; report: python -m bench report {run_dir}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bench import report

    formats = tuple(f.strip() for f in args.format.split(",")) if args.format else report.FORMATS
    out = report.render(Path(args.run_dir), formats)
    print(f"report written to {out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from bench import compare

    result = compare.compare(Path(args.baseline), Path(args.current), compare.parse_percent(args.time_tol),
                             compare.parse_percent(args.mem_tol), float(args.acc_tol))
    print(result.markdown)
    return result.exit_code


def cmd_baseline(args: argparse.Namespace) -> int:
    from bench import compare

    out = compare.save_baseline(Path(args.run_dir), args.name)
    print(f"baseline {args.name!r} saved to {out}; commit it to gate later runs")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from bench import models, schema, tasks
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
    for name, cls in tasks.TASKS.items():
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        print(f"  {name:<16} {doc}")
        for opt, tp, default in schema.describe(cls):
            print(f"      {opt}: {tp} = {default!r}")
    print("matrices: " + ", ".join(builtin_matrices()))
    return 0


def _slots(args: argparse.Namespace, matrix_jobs: int) -> list[dict[str, str]]:
    """One environment per concurrent worker: a GPU each with --gpus, else --jobs copies."""
    if args.gpus:
        ids = _gpu_ids(args.gpus)
        print(f"one worker per GPU: {', '.join(ids)}", flush=True)
        return [{"CUDA_VISIBLE_DEVICES": i} for i in ids]
    jobs = args.jobs or matrix_jobs
    if jobs > 1:
        print(f"note: {jobs} cells run at once; their step times contend for the machine and are not "
              "for comparison", flush=True)
    return [{} for _ in range(jobs)]


def _gpu_ids(spec: str) -> list[str]:
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


def positive_int(text: str) -> int:
    """argparse type: a positive integer."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench", description="Benchmark fine-tuning methods under one harness.")
    sub = p.add_subparsers(dest="verb", required=True)
    r = sub.add_parser("run", help="run a matrix (a built-in name or a TOML file)")
    r.add_argument("matrix")
    r.add_argument("--out", help="run directory (default: reports/runs/MATRIX); rerunning into it resumes")
    r.add_argument("--force", action="store_true", help="rerun cells already recorded ok")
    r.add_argument("--only", help="glob over cell names (model/variant/task/bBxS/seedN) or variant names")
    r.add_argument("--dry-run", action="store_true", help="validate and print the plan; load nothing")
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
    c.set_defaults(func=cmd_compare)
    b = sub.add_parser("baseline", help="copy a run's results into reports/baselines/NAME")
    b.add_argument("run_dir")
    b.add_argument("--name", required=True)
    b.set_defaults(func=cmd_baseline)
    lp = sub.add_parser("list", help="registered methods, built-in models, tasks and matrices")
    lp.set_defaults(func=cmd_list)
    from bench import cli_measure

    cli_measure.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `bench compare ... | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("interrupted; finished cells are recorded, rerun the same command to resume", file=sys.stderr)
        return 130
