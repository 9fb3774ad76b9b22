"""One result record as one flat row of display values: the only place records become display units.

Memory in GiB (2^30 bytes), checkpoints in MiB (2^20), step times in ms, accuracy in percent, so
every table and chart shows the same number. Absent fields become NaN or "", never an error.
"""
from __future__ import annotations

import json
import math
import statistics
from typing import Any

from bench.results.peaks import headline_peak, predicted_headline
from bench.results.record import Record
from bench.results.values import GIB, MIB, num, samples

UNITS_NOTE = ("Memory in GiB (1 GiB = 2^30 bytes), checkpoints in MiB (2^20 bytes), step times in ms, "
              "accuracy in percent; CI = 95% confidence interval of the mean over seeds (t distribution).")


def _gib(value: Any) -> float:
    return num(value) / GIB


def name_of(value: Any) -> str:
    """The name of a model or task, whether the record holds it as a name or as a spec."""
    if isinstance(value, dict):
        return str(value.get("name", ""))
    return "" if value is None else str(value)


def variant_of(rec: Record) -> str:
    return str(rec.variant or rec.method or "")


def step_stats(rec: Record) -> tuple[float, float, float]:
    """(median ms, IQR ms, coefficient of variation %) of the timed steps."""
    steps = samples(rec.time.step_s)
    median, iqr = num(rec.time.step_s_median), num(rec.time.step_s_iqr)
    if math.isnan(median) and steps:
        median = statistics.median(steps)
    if math.isnan(iqr) and len(steps) >= 2:
        q = statistics.quantiles(steps, n=4, method="inclusive")
        iqr = q[2] - q[0]
    cv = math.nan
    if len(steps) >= 2 and statistics.fmean(steps) > 0:
        cv = 100 * statistics.stdev(steps) / statistics.fmean(steps)
    return median * 1e3, iqr * 1e3, cv


def _identity(rec: Record) -> dict[str, Any]:
    settings = rec.settings or {}
    return {
        "name": str(rec.name or rec.cell_id), "cell_id": rec.cell_id, "matrix": name_of(rec.matrix),
        "model": name_of(rec.model), "variant": variant_of(rec), "method": str(rec.method or ""),
        "task": name_of(rec.task), "seed": num(rec.seed),
        "batch_size": num(settings.get("batch_size")), "seq_len": num(settings.get("seq_len")),
        "steps": num(settings.get("steps")), "precision": settings.get("precision") or "",
        "optimizer": settings.get("optimizer") or "",
        "gradient_checkpointing": settings.get("gradient_checkpointing"),
        "activation_offload": settings.get("activation_offload", False),
        "compile": settings.get("compile", "off"), "attn_implementation": settings.get("attn_implementation") or "",
        "loss": settings.get("loss", "standard"), "padding": settings.get("padding", "max_length"),
        "ladder": str(rec.ladder or ""), "rung": num(rec.rung), "sweep": str(rec.sweep or ""),
        "sweep_point": json.dumps(rec.sweep_point, sort_keys=True) if rec.sweep_point else "",
        "device": rec.device.name or rec.device.kind or "",
        "status": str(rec.status), "failed_phase": str(rec.failed_phase or ""),
        "failed_step": num(rec.failed_step), "error": rec.error or "", "traceback": str(rec.traceback or ""),
    }


def memory_taken(rec: Record) -> str:
    """Under which glibc allocator a CPU record's memory figures were taken ("" on CUDA): the memory
    block's own word, else (records from before it) the cell's cpu_allocator setting."""
    if rec.cuda:
        return ""
    allocator = rec.memory.cpu_allocator or (rec.settings or {}).get("cpu_allocator", "default")
    steps = rec.memory.memory_pass_steps
    return f"{allocator} (memory pass, {steps} steps)" if steps else str(allocator)


def _memory(rec: Record) -> dict[str, Any]:
    trainable, total = num(rec.params.trainable), num(rec.params.total)
    peak, source = headline_peak(rec)  # the one definition (bench/results/peaks.py)
    m, opt = rec.memory, rec.optimizer
    return {
        "trainable_params": trainable, "total_params": total,
        "trainable_%": 100 * trainable / total if total else math.nan,
        "peak_mem_GiB": peak / GIB, "peak_mem_source": source if not math.isnan(peak) else "",
        "peak_mem_allocator": memory_taken(rec) if not math.isnan(peak) else "",
        "timed_peak_mem_GiB": _gib(m.timed_peak_rss_above_baseline_bytes),
        "peak_alloc_GiB": _gib(m.peak_allocated_bytes), "peak_reserved_GiB": _gib(m.peak_reserved_bytes),
        "nvml_device_peak_GiB": _gib(m.nvml_device_peak_bytes),
        "nvml_process_peak_GiB": _gib(m.nvml_process_peak_bytes), "peak_rss_GiB": _gib(m.peak_rss_bytes),
        "rss_baseline_GiB": _gib(m.rss_baseline_bytes), "weights_GiB": _gib(m.weights_bytes),
        "eval_peak_alloc_GiB": _gib(m.eval_peak_allocated_bytes),
        "optimizer_state_GiB": _gib(opt.state_bytes_device), "optimizer_managed_GiB": _gib(opt.state_bytes_managed),
    }


def _speed_and_quality(rec: Record) -> dict[str, Any]:
    median_ms, iqr_ms, cv = step_stats(rec)
    t, q, quant, opt, fl = rec.time, rec.quality, rec.quant, rec.optimizer, rec.flops
    return {
        "step_ms_median": median_ms, "step_ms_iqr": iqr_ms, "step_cv_%": cv,
        "tokens_per_s": num(t.tokens_per_s), "tokens_per_s_overall": num(t.tokens_per_s_overall),
        "padding_%": 100 * num(t.padding_fraction), "compile_s": num(t.compile_s),
        "compile_warmup_steps": num(t.compile_warmup_steps),
        "train_s": num(t.train_s), "eval_s": num(t.eval_s), "eval_examples_per_s": num(t.eval_examples_per_s),
        "accuracy_%": 100 * num(q.accuracy), "accuracy_before_%": 100 * num(q.accuracy_before),
        "validation_accuracy_%": 100 * num(q.validation_accuracy), "validation_examples": num(q.validation_examples),
        "validation_note": q.validation_note or "", "validation_eval_s": num(t.validation_eval_s),
        "scored_by": q.scored_by or "label words", "decoder": q.decoder or "", "forgetting": num(q.forgetting),
        "eval_generated_tokens_per_s": num(t.eval_generated_tokens_per_s),
        "eval_loss": num(q.eval_loss), "train_loss_first": num(q.train_loss_first),
        "train_loss_last": num(q.train_loss_last), "eval_examples": num(q.eval_examples),
        "accuracy_note": q.accuracy_note or "",
        "bits_per_param": num(quant.bits_per_param), "quant_type": quant.quant_type or "",
        "double_quant": quant.double_quant, "optimizer_paged_active": opt.paged_active,
        "paged_note": opt.paged_note or "", "flops_per_step": num(fl.flops_per_step),
        "achieved_TFLOPS": num(fl.achieved_tflops), "peak_TFLOPS": num(fl.peak_tflops),
        "mfu_%": 100 * num(fl.mfu), "mfu_note": fl.mfu_note or "",
        **_energy(rec), **_target(rec),
    }


def _energy(rec: Record) -> dict[str, Any]:
    e = rec.energy
    return {"train_kJ": num(e.train_j) / 1000, "train_J_per_step": num(e.train_j_per_step),
            "train_J_per_1k_tokens": num(e.train_j_per_1k_tokens), "train_mean_W": num(e.train_mean_w),
            "eval_J": num(e.eval_j), "energy_source": e.source or "", "energy_note": e.note or ""}


def _target(rec: Record) -> dict[str, Any]:
    t = rec.target
    return {"target_accuracy_%": 100 * num(t.value), "target_reached": t.reached,
            "target_step": num(t.step), "target_train_s": num(t.train_s), "target_tokens": num(t.tokens),
            "target_J": num(t.joules), "target_note": t.note or ""}


def _memory_detail(rec: Record) -> dict[str, float]:
    """The split of the weights, the measured breakdown at the peak and the prediction, in GiB."""
    w, b, p = rec.memory.weights, rec.memory.breakdown, rec.memory.predicted
    return {
        "weights_quantized_payload_GiB": _gib(w.quantized_payload_bytes),
        "weights_quant_constants_GiB": _gib(w.quant_constants_bytes),
        "weights_unquantized_GiB": _gib(w.unquantized_bytes),
        "breakdown_parameters_GiB": _gib(b.parameters_bytes), "breakdown_gradients_GiB": _gib(b.gradients_bytes),
        "breakdown_optimizer_GiB": _gib(b.optimizer_bytes), "breakdown_activations_GiB": _gib(b.activations_bytes),
        "breakdown_other_GiB": _gib(b.other_bytes),
        "predicted_parameters_GiB": _gib(p.parameters_bytes), "predicted_gradients_GiB": _gib(p.gradients_bytes),
        "predicted_optimizer_GiB": _gib(p.optimizer_bytes), "predicted_activations_GiB": _gib(p.activations_bytes),
        "predicted_peak_GiB": _gib(p.peak_bytes),
    }


def cell_row(rec: Record) -> dict[str, Any]:
    """One flat row of display values for a record; absent fields become NaN or ""."""
    row = _identity(rec) | _memory(rec) | _speed_and_quality(rec) | _memory_detail(rec)
    measured = row["peak_mem_GiB"]  # the headline peak: on the same accounting as the prediction below
    predicted = _gib(predicted_headline(rec.memory.predicted.to_json(), rec.cuda))
    row["predicted_vs_measured_%"] = 100 * (predicted / measured - 1) if measured > 0 else math.nan
    row.update({
        "checkpoint_MiB": num(rec.checkpoint_bytes) / MIB, "duration_s": num(rec.duration_s),
        "started_at": rec.started_at or "", "finished_at": rec.finished_at or "",
    })
    return row


COLUMNS = list(cell_row(Record(cell_id="", status="")))  # the same columns even with no records
