"""Command line: `python -m bench VERB ...` and the `ft-bench` console script."""
from __future__ import annotations

import argparse
import sys

from bench.cli import lease, measure, run
from bench.errors import BenchError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench", description="Benchmark fine-tuning methods under one harness.")
    sub = p.add_subparsers(dest="verb", required=True)
    run.add_commands(sub)
    measure.add_commands(sub)
    lease.add_commands(sub)
    return p


def verbs() -> tuple[str, ...]:
    """Every verb the command line takes, read from the parser itself."""
    actions = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return tuple(actions[0].choices)


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
