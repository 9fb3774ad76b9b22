"""The scenario of a method that trains nothing (in-context learning): evaluation only, whose peak
is then the cell's only peak; and the evaluations after training that the training scenario shares:
the test split's (what the report shows) and the validation split's (what the report chooses on:
a sweep's best point, the summary's best). The validation pass comes after the test evaluation's
figures are read, kept out of every peak, its own time in `time.validation_eval_s`.
"""
from __future__ import annotations

from bench.catalog.tasks import Example
from bench.measure import flops
from bench.measure.accuracy import evaluate
from bench.measure.energy import EnergyMeter
from bench.measure.timing import summarize
from bench.scenarios.forgetting import Forgetting
from bench.scenarios.session import Session
from bench.spec import Settings


def no_quality(s: Session) -> None:
    """The quality and time blocks before anything is measured: every cell's record has them."""
    s.rec.quality.set(train_loss=[], eval_examples=0, accuracy_note=s.accuracy_note())
    s.rec.time.set(**summarize([], 0))


def run(s: Session) -> None:
    """Evaluate the adapted model once; its peak memory is the cell's peak."""
    rec, settings = s.rec, s.settings
    no_quality(s)
    Forgetting(rec.quality, s.plan.ctx.model.kind, False, s.plan.ctx.model.random_weights, settings)
    rec.flops.set(**flops.flops_record(None, None, rec.device.name, rec.device.kind == "cuda", settings.precision,
                                       settings.gradient_checkpointing,
                                       "the method trains nothing: no training step to count"))
    if settings.target_accuracy is not None:
        rec.target.set(metric="accuracy", value=settings.target_accuracy,
                       note="no time to target: the method trains nothing")
    s.at("evaluation")
    meter = EnergyMeter.open(s.device)
    rec.energy.set(**meter.describe())
    try:
        # a method that does not train is all evaluation: it runs for time and memory even where its
        # accuracy would mean nothing (random weights), and then reports no accuracy
        meter.begin()
        peaks = evaluate_after(s, s.plan.task.test_subset(settings.eval_examples), even_if_meaningless=True)
        span = meter.end()
        if peaks is not None and span.joules is not None:
            rec.energy.set(eval_j=span.joules, eval_mean_w=span.mean_w)
    finally:
        rec.energy.set(**meter.describe())  # again: a counter that stopped ticking was read at once since
        meter.close()
    rec.memory.set(**(peaks or s.memory.read()))  # the inference peak is this method's only peak
    validate_after(s)


def evaluate_after(s: Session, examples: list[Example], even_if_meaningless: bool = False) -> dict[str, int | None] | None:
    """Accuracy on `examples` with its own memory interval; returns that interval's peaks (None when
    evaluation is off, or its accuracy would mean nothing and `even_if_meaningless` is not set)."""
    rec, settings = s.rec, s.settings
    if settings.eval_examples == 0 or (s.meaningless_accuracy and not even_if_meaningless):
        return None
    s.memory.reset()
    result = evaluate(s.model, s.built.batcher, examples, settings.eval_batch_size, s.device, s.autocast,
                      settings.max_new_tokens, s.plan.method.generate)
    rec.quality.eval_examples = result["eval_examples"]
    if not s.meaningless_accuracy:
        rec.quality.set(accuracy=result["accuracy"], eval_loss=result["eval_loss"])
    rec.time.set(eval_s=result["eval_s"], eval_examples_per_s=result["eval_examples_per_s"])
    if s.plan.task.generative:
        rec.quality.set(scored_by="generation", decoder=s.plan.method.decoder, samples=result["samples"])
        rec.time.set(eval_generated_tokens=result["generated_tokens"],
                     eval_generated_tokens_per_s=result["generated_tokens_per_s"],
                     eval_max_new_tokens=result["max_new_tokens"])
    peaks = s.memory.read()
    rec.memory.set(eval_peak_allocated_bytes=peaks["peak_allocated_bytes"],
                   eval_peak_rss_above_baseline_bytes=peaks["peak_rss_above_baseline_bytes"])
    return peaks


def validation_size(settings: Settings) -> int | None:
    """How many validation examples the pass after training scores: `validation_examples`, or as many
    as the test evaluation where it is unset; None: the whole split."""
    return settings.eval_examples if settings.validation_examples is None else settings.validation_examples


def _validation_note(s: Session) -> str | None:
    """Why the cell records no validation accuracy, or None."""
    size = validation_size(s.settings)
    if size == 0:
        return ("validation off (validation_examples = 0)" if s.settings.validation_examples == 0 else
                "validation off (validation_examples unset follows eval_examples = 0)")
    if s.meaningless_accuracy:
        return f"random weights: accuracy on {s.plan.task.name} would mean nothing"
    if not s.plan.task.validation:
        return f"the task {s.plan.task.name} has no validation split"
    return None


def validate_after(s: Session) -> None:
    """Accuracy on the first `validation_size` validation examples, outside every memory interval
    (the test evaluation's peaks are read before it), or a note saying why there is none."""
    rec = s.rec
    note = _validation_note(s)
    if note:
        rec.quality.set(validation_examples=0, validation_note=note)
        return
    size = validation_size(s.settings)
    examples = s.plan.task.validation if size is None else s.plan.task.validation_subset(size)
    with s.memory.excluded():
        result = evaluate(s.model, s.built.batcher, examples, s.settings.eval_batch_size, s.device, s.autocast,
                          s.settings.max_new_tokens, s.plan.method.generate)
    rec.quality.set(validation_accuracy=result["accuracy"], validation_examples=result["eval_examples"])
    rec.time.set(validation_eval_s=result["eval_s"])
