"""The harness's own overhead: one cell as a bare training loop and through the harness.

The bare loop builds the same model, optimizer and pre-built batches the harness does (same code,
same seed), then runs forward / backward / step with nothing else: no trackers, no hooks, no
progress bar; steps timed by perf_counter (CUDA: an event pair per step, read after the loop).
Both sides run with evaluation off (the bare loop has none) and alternate, each in a fresh
process, for several rounds. Compared: the median step time, and the headline peak of the training
steps (bench/results/peaks.py) on both sides: CUDA: torch's peak allocated plus the optimizer state
in CUDA managed memory; CPU: the peak RSS above the RSS before the model loads. The bare side reads
its optimizer's managed bytes after the loop with bench/optim.py's `state_bytes`, as the harness
does for the record's `optimizer.state_bytes_managed`, and both sides' figures go through the same
`peaks.headline`, so a paged optimizer's state is on both sides or neither.
"""
from __future__ import annotations

import dataclasses
import os
import statistics
from pathlib import Path
from typing import Any, Callable

from bench.errors import ConfigError
from bench.exec.launchers import CellLauncher, spawn
from bench.exec.worker import redirect_to_log, write_json
from bench.results.peaks import Peak, headline, headline_peak
from bench.results.record import Record
from bench.spec import Cell

# (cell, side) -> {"step_s", "step_s_median", "peak_bytes", "peak_kind"}; peak_kind says in words what
# the headline peak is (peaks.Peak.source)
Runner = Callable[[Cell, str], dict[str, Any]]


def side_result(step_s: list[float] | None, step_s_median: float | None, peak: Peak) -> dict[str, Any]:
    """What one run of either side gives back."""
    return {"step_s": step_s, "step_s_median": step_s_median, "peak_bytes": peak.bytes, "peak_kind": peak.source}


def bare_peak(cuda: bool, device: Any, opt: Any, rss_above_baseline: int | None) -> Peak:
    """The bare loop's headline peak: torch's peak allocated (CUDA) and its optimizer's managed state,
    read as the harness reads them, or the peak RSS above the pre-load baseline (CPU)."""
    from bench import optim

    torch_peak = None
    if cuda:
        import torch

        torch_peak = torch.cuda.max_memory_allocated(device)
    return headline(cuda, torch_peak, optim.state_bytes(opt)["state_bytes_managed"], rss_above_baseline)


def harness_result(rec: Record) -> dict[str, Any]:
    """The harness side from its record."""
    return side_result(rec.time.step_s, rec.time.step_s_median, headline_peak(rec))


def bare_loop(cell: Cell) -> dict[str, Any]:
    """In a fresh process: build as the harness builds, then train with a plain loop."""
    import contextlib

    import torch

    from bench import build, optim, recipe
    from bench.measure.memory import (
        peak_rss_bytes,
        reset_peak_rss,
        rss_bytes,
        warm_runtime,
    )

    s = cell.settings
    if s.threads:
        torch.set_num_threads(s.threads)
    device = build.pick_device()
    warm_runtime(device)  # as the harness does before its baselines
    baseline = rss_bytes()
    built = build.build(build.plan(cell, device))
    model, params = built.model, built.trainable
    opt, _ = optim.build_optimizer(params, s, device)
    batches = list(built.batcher.train_batches(s.batch_size, s.warmup_steps + s.steps, cell.seed, device,
                                               s.padding))
    step_loss, _ = recipe.step_loss(model, s)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    autocast = recipe.forward_context(s, (lambda: torch.autocast(device.type, dtype=torch.bfloat16))
                                      if s.precision == "bf16-mixed" else contextlib.nullcontext, device)
    model.train()
    reset_peak_rss()
    marks: list[Any] = []
    for i, batch in enumerate(batches):
        if i >= s.warmup_steps:
            marks.append(_mark(cuda))
        with autocast():
            loss = step_loss(model, batch)
        loss.backward()
        if s.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, s.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= s.warmup_steps:
            marks.append(_mark(cuda))
    if cuda:
        torch.cuda.synchronize(device)
        steps = [a.elapsed_time(b) / 1000.0 for a, b in zip(marks[::2], marks[1::2])]
    else:
        steps = [b - a for a, b in zip(marks[::2], marks[1::2])]
    peak = bare_peak(cuda, device, opt, None if cuda else peak_rss_bytes() - baseline)
    return side_result(steps, statistics.median(steps), peak)


def _mark(cuda: bool) -> Any:
    import time

    if not cuda:
        return time.perf_counter()
    import torch

    event = torch.cuda.Event(enable_timing=True)
    event.record()
    return event


def _bare_target(cell_json: dict[str, Any], env: dict[str, str], log_path: str, out_path: str) -> None:
    """Process body of the bare side: a cell's process, with the bare loop in place of the harness."""
    redirect_to_log(log_path, env)
    write_json(out_path, bare_loop(Cell.from_json(cell_json)))


def run_bare(cell: Cell, work_dir: Path, within_s: float | None = None) -> dict[str, Any]:
    """The bare loop in a freshly spawned interpreter, started as the launcher starts a cell (within
    `within_s` where that is below the cell's timeout_s)."""
    log = work_dir / "logs" / f"bare-{cell.cell_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "BENCH_TTY"}
    limit = cell.settings.timeout_s if within_s is None else min(within_s, cell.settings.timeout_s)
    ended = spawn(_bare_target, (cell.to_json(), env, str(log)), limit)
    if ended.timed_out:
        raise RuntimeError(f"the bare loop ran past {limit:g} s (log: {log})")
    if ended.result is None:
        raise RuntimeError(f"the bare loop exited with code {ended.exitcode} (log: {log})")
    return ended.result


def run_harness(cell: Cell, work_dir: Path, within_s: float | None = None) -> dict[str, Any]:
    work_dir.mkdir(parents=True, exist_ok=True)
    rec = CellLauncher().run(cell, work_dir, "selfcheck", {}, within_s)
    if not rec.ok:
        raise RuntimeError(f"the harness run ended {rec.status}: {rec.error}")
    return harness_result(rec)


def selfcheck_cell(cell: Cell, steps: int | None = None) -> Cell:
    """The cell as both sides run it: evaluation off, optionally more steps. A compiled cell is
    refused: the harness steps it until steady before its warm-up, which a bare loop would not."""
    if cell.settings.compile != "off":
        raise ConfigError(f"selfcheck: cell {cell.name} has compile = {cell.settings.compile!r}; the overhead "
                          "check compares uncompiled loops (choose a cell with compile = 'off')")
    overrides: dict[str, Any] = {"eval_examples": 0}
    if steps:
        overrides["steps"] = steps
    return dataclasses.replace(cell, settings=dataclasses.replace(cell.settings, **overrides))


def compare(cell: Cell, rounds: int, work_dir: Path, bare: Runner | None = None, harness: Runner | None = None,
            say: Callable[[str], None] = print) -> dict[str, Any]:
    """Alternate bare and harness runs (the order flips every round); ratios of the medians."""
    bare = bare or (lambda c, _: run_bare(c, work_dir))
    harness = harness or (lambda c, _: run_harness(c, work_dir))
    runs: dict[str, list[dict[str, Any]]] = {"bare": [], "harness": []}
    for r in range(rounds):
        for side in (("bare", "harness") if r % 2 == 0 else ("harness", "bare")):
            result = (bare if side == "bare" else harness)(cell, side)
            runs[side].append(result)
            say(f"  round {r + 1} {side:<7} median step {result['step_s_median'] * 1e3:8.2f} ms  "
                f"{result['peak_kind']} {result['peak_bytes'] / 2**20:9.1f} MiB")
    # Each round's pair ran back to back, so a ratio within a round cancels slow drifts in the
    # machine's load; the median over rounds then drops an odd round. Pooled medians are kept too.
    ratios = [h["step_s_median"] / b["step_s_median"] for h, b in zip(runs["harness"], runs["bare"])]
    diffs = [(h["peak_bytes"] - b["peak_bytes"]) / b["peak_bytes"] for h, b in zip(runs["harness"], runs["bare"])]
    med = {k: statistics.median(s for x in v for s in x.get("step_s") or [x["step_s_median"]]) for k, v in runs.items()}
    peak = {k: statistics.median(x["peak_bytes"] for x in v) for k, v in runs.items()}
    # one rule on both sides gives one kind; two kinds (say the managed state on one side only) say so
    kinds = list(dict.fromkeys(x["peak_kind"] for v in runs.values() for x in v))
    kind = kinds[0] if len(kinds) == 1 else "headline peaks of different kinds (" + "; ".join(kinds) + ")"
    return {"cell": cell.name, "rounds": rounds, "runs": runs, "step_ratio": statistics.median(ratios),
            "step_ratios": ratios, "step_ratio_pooled": med["harness"] / med["bare"], "step_s_median": med,
            "peak_kind": kind, "peak_bytes": peak, "peak_diff": statistics.median(diffs)}


def main_summary(result: dict[str, Any]) -> str:
    ratio, diff = result["step_ratio"], result["peak_diff"]
    rounds = ", ".join(f"{r:.3f}" for r in result["step_ratios"])
    return (f"step time: harness / bare = {ratio:.4f} ({(ratio - 1) * 100:+.2f}%; target within 2%): median of the "
            f"rounds' ratios [{rounds}]; all steps pooled: {result['step_ratio_pooled']:.4f}\n"
            f"{result['peak_kind']}: harness - bare = {diff * 100:+.2f}% "
            f"({(result['peak_bytes']['harness'] - result['peak_bytes']['bare']) / 2**20:+.1f} MiB; target within 1%)")
