"""The scenario of a method that trains: accuracy (and general-text loss) before, the timed training
steps through the one loop, the memory peak and its breakdown, FLOPs of one extra step, then
accuracy (and general-text loss) after on the test split, and accuracy on the validation split (what
the report chooses on), each evaluation outside the timed steps and the training peak. It fills the
record's typed blocks as it goes, so a cell that fails keeps what was measured before the failure.
"""
from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Iterator

import torch

from bench import optim, parallel, recipe
from bench.catalog.batches import positions, real_tokens
from bench.loop import (
    Instruments,
    LoopState,
    NoProbe,
    NoProgress,
    NoWatch,
    Progress,
    Step,
    StepLoss,
    train,
    warm_until_steady,
)
from bench.measure import flops
from bench.measure.accuracy import evaluate
from bench.measure.breakdown import PeakWatch, breakdown, gradient_bytes
from bench.measure.energy import EnergyMeter, Span
from bench.measure.timing import StepTimer, summarize
from bench.scenarios import memory_pass
from bench.scenarios.evaluation import evaluate_after, no_quality, validate_after
from bench.scenarios.forgetting import Forgetting
from bench.scenarios.session import Session
from bench.scenarios.target import TargetProbe, not_applicable


def run(s: Session, loop: LoopState) -> None:
    """Train the session's model; `loop` is the caller's, so a failure can name the step."""
    rec, settings, built, device = s.rec, s.settings, s.built, s.device
    no_quality(s)
    eval_set = s.plan.task.test_subset(settings.eval_examples)
    s.at("evaluation before")
    if settings.eval_examples != 0 and not s.meaningless_accuracy:
        rec.quality.accuracy_before = evaluate(s.model, built.batcher, eval_set, settings.eval_batch_size, device,
                                               s.autocast, settings.max_new_tokens, s.plan.method.generate)["accuracy"]
    forgetting = Forgetting(rec.quality, s.plan.ctx.model.kind, True, s.plan.ctx.model.random_weights, settings)
    forgetting.measure("before", s.model, built.batcher.tok, settings, device, s.autocast)
    s.at("training")
    meter = EnergyMeter.open(device)
    rec.energy.set(**meter.describe())
    loss, restore = recipe.step_loss(s.model, settings)
    try:
        batches = _train(s, loop, loss, meter)
        # after the peak and the timings are read: an extra forward/backward, no optimizer step
        s.at("count")
        rec.flops.set(**_count(s, batches[settings.warmup_steps], loss))
        del batches
        restore()  # the LM head back in place for evaluation
        s.at("evaluation")
        forgetting.measure("after", s.model, built.batcher.tok, settings, device, s.autocast)
        meter.begin()
        evaluate_after(s, eval_set)
        if rec.quality.eval_examples and meter.counter:  # an evaluation ran
            span = meter.end()
            rec.energy.set(eval_j=span.joules, eval_mean_w=span.mean_w)
        validate_after(s)  # what the report chooses on; after the test evaluation's figures, out of its energy
    finally:
        restore()  # idempotent: also when training failed
        rec.energy.set(**meter.describe())  # again: a counter that stopped ticking was read at once since
        meter.close()


def _energy(span: Span, steps: int, tokens: int) -> dict[str, Any]:
    """The `energy` block's training figures from the span of the timed steps."""
    if span.joules is None:
        return {}
    return {"train_j": span.joules, "train_s": span.seconds, "train_j_per_step": span.joules / steps,
            "train_j_per_1k_tokens": 1000 * span.joules / tokens if tokens else None, "train_mean_w": span.mean_w}


def _train(s: Session, loop: LoopState, loss: StepLoss, meter: EnergyMeter) -> list[dict[str, torch.Tensor]]:
    """The timed steps; returns the batches (the FLOP count reuses the first timed one). A compiled
    model first steps on the warm-up batches until its steps are steady (compilation and
    recompilation happen there), then trains as any model does: warm-up steps, timed steps."""
    rec, settings, built, device = s.rec, s.settings, s.built, s.device
    here = parallel.world()
    model, trainable, wrapped = parallel.prepare(s.model, built.trainable, settings, device)
    if wrapped:
        rec.ranks.set(**wrapped)
        if settings.strategy == "fsdp":  # this rank's shards, for the breakdown
            s.parameter_split = {"quantized_payload_bytes": 0, "quant_constants_bytes": 0,
                                 "unquantized_bytes": sum(parallel.local_bytes(p) for p in model.parameters())}
    opt, opt_info = optim.build_optimizer(trainable, settings, device)
    rec.optimizer.set(**opt_info)
    total_steps = settings.warmup_steps + settings.steps
    # a rank takes its rows of each global batch: the ranks together train on what one rank would
    batches = [parallel.rank_slice(b, here) for b in built.batcher.train_batches(
        settings.batch_size * (here.size if here else 1), total_steps, s.cell.seed, device, settings.padding)]
    timed = batches[settings.warmup_steps:]
    tokens = sum(real_tokens(b) for b in timed)
    s.padded = tokens < settings.steps * settings.batch_size * settings.seq_len
    step = Step(recipe.compiled(model, settings), opt, trainable, settings,
                recipe.forward_context(settings, s.autocast, device), loss)
    timer = StepTimer(device)
    taken = memory_pass.run(settings, s.memory, step, batches) if memory_pass.applies(settings, device) else None
    with _step_bar(total_steps, s.cell.name) as bar:
        s.memory.reset()  # the optimizer state's first allocation belongs to training's peak
        compile_times = _warm_compiled(s, step, batches) if settings.compile != "off" else []
        state_at_start = bool(opt.state)  # the compile warm-up's steps are real optimizer steps
        watch = PeakWatch(device) if s.memory.cuda else NoWatch()
        probe = _target_probe(s, batches, meter, loss)
        t0 = _clock(device)
        if probe:
            probe.start()
        train(step, batches, loop, Instruments(parallel.BarrierTimer(timer) if here else timer, watch, bar, meter,
                                               probe or NoProbe()))
        span = meter.end()  # begun by the loop at the first timed step
        train_s = _clock(device) - t0
    if probe:  # the evaluations on the way are not training
        span, train_s = probe.without_evaluations(span), train_s - probe.eval_s
        rec.target.set(**probe.record())
    rec.energy.set(**_energy(span, settings.steps, tokens))
    rec.memory.set(**s.memory.read(), cpu_allocator=None if s.memory.cuda else settings.cpu_allocator)
    if taken:  # the pass's figures are the record's; the timed steps' peak is kept beside them
        rec.memory.timed_peak_rss_above_baseline_bytes = rec.memory.peak_rss_above_baseline_bytes
        rec.memory.set(**taken)
    rec.time.set(**summarize(timer.step_s(), tokens), train_s=train_s,
                 padding_fraction=1 - tokens / max(1, sum(positions(b) for b in timed)))
    if compile_times:
        rec.time.set(compile_warmup_steps=len(compile_times),
                     compile_s=max(0.0, sum(compile_times) - len(compile_times) * (rec.time.step_s_median or 0.0)))
    losses = [float(x) for x in parallel.mean_over_ranks(loop.losses).cpu()]  # the global batch's loss
    rec.quality.set(train_loss=losses, train_loss_first=losses[0], train_loss_last=losses[-1])
    state = optim.state_bytes(opt)
    rec.optimizer.set(**state, **optim.paging(settings.optimizer, device.type, state["state_bytes_managed"], trainable))
    cpu_measured = None if s.memory.cuda else rec.memory.peak_rss_above_baseline_bytes
    rec.memory.breakdown.set(**breakdown(s.parameter_split, gradient_bytes(trainable), state,
                                         watch if isinstance(watch, PeakWatch) else None, cpu_measured,
                                         state_at_start=state_at_start))
    return batches


def _warm_compiled(s: Session, step: Step, batches: list[dict[str, torch.Tensor]]) -> list[float]:
    """The compile warm-up (see `_train`), kept out of the training peak as the time-to-target probe
    keeps its evaluations out: the training peaks start after it, and its own peak allocated is
    recorded apart. Returns its step times."""
    with s.memory.excluded():
        times = warm_until_steady(step, batches[:max(1, s.settings.warmup_steps)], lambda: _clock(s.device))
        s.rec.memory.compile_warmup_peak_allocated_bytes = s.memory.read()["peak_allocated_bytes"]
    s.memory.notes.append(f"the compile warm-up ({len(times)} steps) is kept out of the training peak "
                          "(its own: compile_warmup_peak_allocated_bytes); reserved, NVML and RSS peaks may hold "
                          "memory it cached")
    return times


def _target_probe(s: Session, batches: list[dict[str, torch.Tensor]], meter: EnergyMeter,
                  loss: StepLoss) -> TargetProbe | None:
    """The time-to-target probe where the cell has a target it can measure; else the reason in the record."""
    value = s.settings.target_accuracy
    if value is None:
        return None
    why = not_applicable(s)
    if why:
        s.rec.target.set(metric="accuracy", value=value, note=why)
        return None
    s.memory.notes.append(f"validation evaluations every {s.settings.target_every} steps (target_accuracy) are kept "
                          "out of torch's peak allocated; reserved, NVML and RSS peaks may hold memory they cached")
    return TargetProbe(s, batches, meter, loss)


def _count(s: Session, batch: dict[str, torch.Tensor], loss: StepLoss) -> dict[str, Any]:
    """The `flops` block, counted on one extra forward and backward of the eager model, through the
    step's own loss (see bench/measure/flops.py)."""
    count, note = None, None
    try:
        count = flops.count_step_flops(s.model, batch, s.autocast, s.built.trainable, loss)
    except Exception as exc:  # noqa: BLE001 - out of memory or an op the counter cannot take: a note
        note = f"FLOPs not counted: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
    return flops.flops_record(count, s.rec.time.step_s_median, s.rec.device.name, s.rec.device.kind == "cuda",
                              s.settings.precision, s.settings.gradient_checkpointing, note,
                              recipe.recomputed_flops(loss, batch))


def _clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


@contextlib.contextmanager
def _step_bar(total: int, name: str) -> Iterator[Progress]:
    """A step bar on the user's terminal (the runner passes its tty path), else none."""
    tty = os.environ.get("BENCH_TTY")
    if not tty:
        yield NoProgress()
        return
    from tqdm import tqdm

    with open(tty, "w") as out, tqdm(total=total, desc=f"  {name}", unit="step", leave=False, position=1,
                                     file=out, dynamic_ncols=True) as bar:
        yield bar
