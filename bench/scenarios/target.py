"""Time to a target accuracy (settings `target_accuracy`, `target_every`, `target_examples`): after
every `target_every`-th training step (warm-up included) and after the last, the model is scored on
the first `target_examples` examples of the validation split (never the test split the fixed-step
accuracy uses); those evaluations are kept out of the training's memory peaks as well. Each point
of the curve has the training seconds (wall time from the first step, device synchronized,
evaluations excluded), the real tokens trained on, and the joules (evaluations excluded, where
energy is measured). Every such read goes through the energy meter's `mark()`, which reads NVML's
coarse counter at its ticks (bench/measure/energy.py): the wait for a tick before an evaluation is
idle time left in the training's figures, up to one tick per evaluation. The record keeps the curve
and the first point at or above the target.
Compilation happens before the first step and is not counted (time.compile_s has it)."""
from __future__ import annotations

import itertools
from typing import Any

import torch

from bench.catalog.batches import real_tokens
from bench.loop import StepLoss
from bench.measure.accuracy import evaluate
from bench.measure.energy import EnergyMeter, Span
from bench.recipe import head_on
from bench.scenarios.session import Session


class TargetProbe:
    """The loop's probe: evaluates at the chosen steps and keeps what the time-to-target needs."""

    def __init__(self, s: Session, batches: list[dict[str, torch.Tensor]], meter: EnergyMeter, loss: StepLoss) -> None:
        settings = s.settings
        self.s, self.meter, self.loss = s, meter, loss
        self.value, self.every = settings.target_accuracy, settings.target_every
        self.last = len(batches) - 1
        self.warmup = settings.warmup_steps
        self.examples = s.plan.task.validation_subset(settings.target_examples)
        self.tokens = list(itertools.accumulate(real_tokens(b) for b in batches))
        self.curve: list[dict[str, Any]] = []
        self.t0 = 0.0
        self.j0: float | None = None
        self.eval_s = self.eval_j = 0.0  # all evaluations so far
        self.timed_eval_s = self.timed_eval_j = 0.0  # those inside the timed steps' energy span

    def start(self) -> None:
        first = self.meter.mark()
        self.t0, self.j0 = first.t, first.joules

    def after(self, step: int) -> None:
        if (step + 1) % self.every and step != self.last:
            return
        before = self.meter.mark()
        now, j = before.t, before.joules
        with self.s.memory.excluded(), head_on(self.loss):
            result = evaluate(self.s.model, self.s.built.batcher, self.examples, self.s.settings.eval_batch_size,
                              self.s.device, self.s.autocast, self.s.settings.max_new_tokens,
                              self.s.plan.method.generate)
        after = self.meter.mark()
        spent_s, j_after = after.t - now, after.joules
        spent_j = j_after - j if j is not None and j_after is not None else 0.0
        point = {"step": step + 1, "train_s": now - self.t0 - self.eval_s, "tokens": self.tokens[step],
                 "joules": j - self.j0 - self.eval_j if j is not None and self.j0 is not None else None,
                 "accuracy": result["accuracy"]}
        self.curve.append(point)
        self.eval_s += spent_s
        self.eval_j += spent_j
        if step >= self.warmup:
            self.timed_eval_s += spent_s
            self.timed_eval_j += spent_j

    def without_evaluations(self, span: Span) -> Span:
        """The timed steps' energy span less the evaluations made inside it."""
        return Span(None if span.joules is None else span.joules - self.timed_eval_j, span.seconds - self.timed_eval_s)

    def record(self) -> dict[str, Any]:
        """The `target` block."""
        out: dict[str, Any] = {"metric": "accuracy", "value": self.value, "every": self.every,
                               "examples": len(self.examples), "curve": self.curve}
        first = next((p for p in self.curve if p["accuracy"] is not None and p["accuracy"] >= self.value), None)
        if first is None:
            best = max((p["accuracy"] or 0.0) for p in self.curve) if self.curve else None
            note = f"not reached in {self.last + 1} steps"
            return {**out, "reached": False,
                    "note": note + (f" (best validation accuracy {best:.3f})" if best is not None else "")}
        return {**out, "reached": True, "step": first["step"], "train_s": first["train_s"],
                "tokens": first["tokens"], "joules": first["joules"]}


def not_applicable(s: Session) -> str | None:
    """Why a cell with a target cannot measure time to it (then its record says so), or None."""
    if s.meaningless_accuracy:
        return "no time to target: accuracy means nothing with random weights on natural text"
    if not s.plan.task.validation:
        return "no time to target: the task has no validation split"
    return None
