"""`bench gpu-check`: the staged, budgeted, resumable GPU check a short GPU lease runs
(bench/tools/lease/), or its rehearsal on the CPU."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.errors import BenchError

DEFAULT_BUDGET_S = 540.0  # a 10-minute command, less a minute for the interpreter, the copy back and slack


def cmd_gpu_check(args: argparse.Namespace) -> int:
    from bench.tools.lease import check

    if args.budget_s <= 0:
        raise BenchError(f"--budget-s {args.budget_s:g}: must be > 0 (seconds this call may spend)")
    work, out = check.default_folders(args.rehearse)
    work = Path(args.work) if args.work else work
    if args.plan:
        print("\n".join(check.plan_lines(args.rehearse, args.plan, work)))
        return 0
    out = Path(args.out) if args.out else (out if not args.work else work / "bundle")
    print(f"gpu-check{' --rehearse' if args.rehearse else ''}: budget {args.budget_s:.0f} s, bundle {out}, "
          f"work folder {work}", flush=True)
    return check.run(out, work, args.budget_s, args.rehearse, args.fresh, args.allow_busy_gpu, sys.argv,
                     lambda line: print(line, flush=True))


def add_commands(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser("gpu-check", help="the GPU check in stages, within a time budget, resumable, its results "
                       "in a bundle of at most 8 files (what a short GPU lease brings back)")
    g.add_argument("--out", help="the bundle's folder ($OUT on a lent GPU machine; default: WORK/bundle)")
    g.add_argument("--work", help="the run folder (records, logs, compile cache; default: reports/runs/gpu-check, "
                   "or reports/runs/gpu-check-rehearsal)")
    g.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                   help=f"seconds this call may spend (default {DEFAULT_BUDGET_S:.0f}); it stops between cells "
                   "before the next would not fit")
    g.add_argument("--rehearse", action="store_true", help="the same stages, budget, bundle and resume on the tiny "
                   "random Llama on the CPU")
    g.add_argument("--plan", metavar="DEVICE_NAME", nargs="?", const="NVIDIA H200",
                   help="print what each stage is expected to take on that device (default: NVIDIA H200), from the "
                   "plan and the work folder's records; runs nothing")
    g.add_argument("--fresh", action="store_true", help="start over: remove the work folder and the bundle's files")
    g.add_argument("--allow-busy-gpu", action="store_true", help="run even if other processes hold GPU memory")
    g.set_defaults(func=cmd_gpu_check)
