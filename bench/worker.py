"""One cell, in its own process: load, adapt, train, evaluate, and return the record.

The runner starts `entry` in a fresh process per cell; it writes the record to a JSON file.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.config import Cell
from bench.errors import UnsupportedError


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


PHASES = ("plan", "load", "adapt", "evaluation before", "training", "count", "evaluation", "save")


@dataclass
class Progress:
    """Where the cell is: a failure record names the phase (and the training step) it happened in."""

    phase: str = "plan"
    loop: Any = None  # the training loop's LoopState once training starts (its step is the failed one)

    def at(self, phase: str) -> None:
        self.phase = phase

    @property
    def step(self) -> int | None:
        return self.loop.step if self.phase == "training" and self.loop is not None else None

    def where(self) -> str:
        return f"at training step {self.step}" if self.step is not None else f"in phase '{self.phase}'"


def base_record(cell: Cell, matrix: str) -> dict[str, Any]:
    """The fields every record has, whatever happened to the cell."""
    return {
        "cell_id": cell.cell_id, "name": cell.name, "matrix": matrix, "variant": cell.method.name,
        "method": cell.method.method, "method_config": cell.method.options, "model": cell.model.name,
        "model_spec": cell.model.record(), "task": cell.task.name, "task_options": cell.task.options,
        "seed": cell.seed, "settings": cell.settings.record(), "status": "error", "error": None,
        "failed_phase": None, "failed_step": None, "device": None, "params": None, "memory": None, "time": None,
        "quality": None, "checkpoint_bytes": None, "started_at": now(), "finished_at": None,
    }


def checkpoint_bytes(params: dict[str, Any]) -> int:
    """Size of the safetensors file the trainable weights save to."""
    from safetensors.torch import save_file

    tensors = {n: p.detach().contiguous().cpu() for n, p in params.items()}
    if not tensors:
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-ckpt-") as tmp:
        path = Path(tmp) / "trainable.safetensors"
        save_file(tensors, str(path))
        return path.stat().st_size


def execute(cell: Cell, rec: dict[str, Any], progress: Progress | None = None) -> None:
    """Run the cell, filling `rec` as it goes (so a failure keeps what was measured)."""
    import torch

    from bench import build, capacity, envinfo, optim
    from bench.evaluate import evaluate
    from bench.forgetting import Forgetting
    from bench.trackers.breakdown import breakdown, gradient_bytes, parameter_bytes
    from bench.trackers.memory import MemoryTracker
    from bench.trackers.timing import StepTimer, summarize
    from bench.trackers.weights import bits_per_param_of, weights_breakdown
    from bench.train import LoopState, fault_hook, train

    s = cell.settings
    if s.threads:
        torch.set_num_threads(s.threads)
    device = build.pick_device()
    rec["device"] = {"kind": device.type,
                     "name": torch.cuda.get_device_name(device) if device.type == "cuda" else envinfo.cpu_name()}
    plan = build.plan(cell, device)
    rec["task_data"] = plan.task.data
    method, task = plan.method, plan.task
    cap = capacity.apply_cap(device)
    if cap is not None:
        rec["memory_cap"] = cap
    progress = progress or Progress()
    warm_runtime(device)
    memory = MemoryTracker(device)  # NVML and RSS baselines before anything loads
    try:
        built = build.build(plan, progress.at)
        model, trainable, batcher = built.model, built.trainable, built.batcher
        rec["params"] = {"trainable": sum(p.numel() for p in trainable),
                         "total": sum(p.numel() for p in model.parameters())}
        # from the tensors, before any forward: bitsandbytes may repack 4-bit weights for CPU inference
        mem: dict[str, Any] = {"weights_bytes": memory.allocated_bytes(), "weights": weights_breakdown(model)}
        params_split = parameter_bytes(model)
        rec["memory"] = mem
        rec.update(plan.ctx.notes)
        bits = bits_per_param_of(mem["weights"])
        if bits is not None:
            rec["quant"] = {**rec.get("quant", {}), "bits_per_param": bits}

        def autocast() -> Any:
            if s.precision == "bf16-mixed":
                return torch.autocast(device.type, dtype=torch.bfloat16)
            return contextlib.nullcontext()

        meaningless = plan.ctx.model.random_weights and task.natural_text
        # A method that does not train is all evaluation: run it for time and memory even when
        # its accuracy would mean nothing (and report no accuracy then).
        evaluable = s.eval_examples != 0 and (not meaningless or not method.trains)
        quality: dict[str, Any] = {"accuracy": None, "accuracy_before": None, "eval_loss": None,
                                   "train_loss_first": None, "train_loss_last": None, "train_loss": [],
                                   "eval_examples": 0, "accuracy_note": None}
        rec["quality"] = quality
        if s.eval_examples == 0:
            quality["accuracy_note"] = "evaluation off (eval_examples = 0)"
        elif meaningless:
            quality["accuracy_note"] = (f"random weights: accuracy on {task.name} would mean nothing; "
                                        "this row measures memory and time")
        eval_set = task.test_subset(s.eval_examples)
        progress.at("evaluation before")
        if evaluable and method.trains:
            quality["accuracy_before"] = evaluate(model, batcher, eval_set, s.eval_batch_size, device, autocast)["accuracy"]
        forgetting = Forgetting(quality, plan.ctx.model.kind, method.trains, plan.ctx.model.random_weights, s)
        forgetting.measure("before", model, batcher.tok, s, device, autocast)

        timing: dict[str, Any] = {**summarize([], 0), "train_s": None, "eval_s": None, "eval_examples_per_s": None}
        rec["time"] = timing
        padded = False  # rows shorter than seq_len (the memory model then predicts masked attention)
        if method.trains:
            state = LoopState()
            progress.at("training")
            progress.loop = state
            opt, opt_info = optim.build_optimizer(trainable, s, device)
            rec["optimizer"] = opt_info
            total_steps = s.warmup_steps + s.steps
            batches = list(batcher.train_batches(s.batch_size, total_steps, cell.seed, device))
            tokens = sum(int(b["attention_mask"].sum()) for b in batches[s.warmup_steps:])
            padded = tokens < s.steps * s.batch_size * s.seq_len
            timer = StepTimer(device)
            bar = _step_bar(total_steps, cell.name)
            t0 = _clock(device)
            try:
                watch = train(model, opt, batches, s, trainable, memory, timer, state, autocast, fault_hook(), bar)
            finally:
                if bar is not None:
                    bar.close()
            timing["train_s"] = _clock(device) - t0
            mem.update(memory.read())
            timing.update(summarize(timer.step_s(), tokens))
            losses = [float(x) for x in state.losses.cpu()]
            quality.update(train_loss=losses, train_loss_first=losses[0], train_loss_last=losses[-1])
            opt_info.update(optim.state_bytes(opt))
            opt_info["paged_active"] = device.type == "cuda" and opt_info["state_bytes_managed"] > 0
            mem["breakdown"] = breakdown(params_split, gradient_bytes(trainable), opt_info, watch,
                                         None if memory.cuda else mem["peak_rss_above_baseline_bytes"])
            # after the peak and the timings are read: an extra forward/backward, no optimizer step
            progress.at("count")
            rec["flops"] = _flops(model, batches[s.warmup_steps], autocast, trainable, timing, rec["device"], s)
            del batches
        else:
            rec["flops"] = _flops(None, {}, autocast, trainable, timing, rec["device"], s)
        progress.at("evaluation")
        forgetting.measure("after", model, batcher.tok, s, device, autocast)
        if evaluable:
            memory.reset()
            result = evaluate(model, batcher, eval_set, s.eval_batch_size, device, autocast)
            quality["eval_examples"] = result["eval_examples"]
            if not meaningless:
                quality.update(accuracy=result["accuracy"], eval_loss=result["eval_loss"])
            timing.update(eval_s=result["eval_s"], eval_examples_per_s=result["eval_examples_per_s"])
            peaks = memory.read()
            mem["eval_peak_allocated_bytes"] = peaks["peak_allocated_bytes"]
            mem["eval_peak_rss_above_baseline_bytes"] = peaks["peak_rss_above_baseline_bytes"]
            if not method.trains:  # the inference peak is this method's only peak
                mem.update(peaks)
        if not method.trains and "peak_rss_bytes" not in mem:
            mem.update(memory.read())
        # after every peak is read: building the meta model must not show in the process' RSS peak
        mem["predicted"] = _predict(cell, device.type, len(task.label_words), padded)
        progress.at("save")
        rec["checkpoint_bytes"] = checkpoint_bytes({n: p for n, p in model.named_parameters() if p.requires_grad})
        if memory.notes:
            mem["notes"] = memory.notes
    finally:
        memory.close()


def warm_runtime(device: Any) -> None:
    """Load what every cell's code may load, before the memory baselines are taken: the libraries
    any method or task imports (peft adds ~190 MB of resident memory, datasets ~80 MB) and the
    matmul kernels' first use. Otherwise a cell's training memory on the CPU would include the
    imports it happens to trigger after the baseline: methods would differ by their imports."""
    import importlib

    import torch

    for name in ("transformers", "peft", "bitsandbytes", "datasets"):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a missing optional library is the method's business
            pass
    x = torch.ones(8, 8, device=device, requires_grad=True)
    (x @ x).sum().backward()


def _predict(cell: Cell, device_type: str, num_labels: int | None, padded: bool = False) -> dict[str, Any]:
    """The memory model's prediction for this cell, or a block saying why there is none."""
    try:
        from bench.memory_model import predict

        return predict(cell, device_type, num_labels, padded)
    except Exception as exc:  # noqa: BLE001 - a prediction never fails the cell
        return {"peak_bytes": None, "notes": [f"no prediction: {type(exc).__name__}: {exc}"]}


def _flops(model: Any, batch: dict[str, Any], autocast: Any, trainable: list[Any], timing: dict[str, Any],
           device: dict[str, Any], s: Any) -> dict[str, Any]:
    """The `flops` block, counted on one extra forward and backward (see bench/flops.py)."""
    from bench import flops

    count, note = None, None
    if model is None:
        note = "the method trains nothing: no training step to count"
    else:
        try:
            count = flops.count_step_flops(model, batch, autocast, trainable)
        except Exception as exc:  # noqa: BLE001 - out of memory or an op the counter cannot take: a note
            note = f"FLOPs not counted: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
    return flops.flops_record(count, timing.get("step_s_median"), device.get("name"), device.get("kind") == "cuda",
                              s.precision, s.gradient_checkpointing, note)


def _clock(device: Any) -> float:
    import time

    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _step_bar(total: int, name: str) -> Any:
    """A step bar on the user's terminal (the runner passes its tty path), else none."""
    tty = os.environ.get("BENCH_TTY")
    if not tty:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"  {name}", unit="step", leave=False, position=1,
                file=open(tty, "w"), dynamic_ncols=True)  # noqa: SIM115 (lives as long as the bar)


def run_cell(cell: Cell, matrix: str = "") -> dict[str, Any]:
    rec = base_record(cell, matrix)
    try:
        import torch

        oom: tuple[type, ...] = (torch.OutOfMemoryError,)
    except ImportError:
        oom = ()
    progress = Progress()
    try:
        execute(cell, rec, progress)
        rec["status"] = "ok"
    except UnsupportedError as exc:
        rec.update(status="unsupported", error=str(exc))
    except oom as exc:
        _failed(rec, progress)
        rec.update(status="oom", error=f"out of memory {progress.where()}: {(str(exc).splitlines() or [''])[0]}")
        device = (rec.get("device") or {}).get("kind", "cuda")
        rec["memory"] = {**(rec["memory"] or {}), "predicted": _predict(cell, device, None)}  # what it would need
    except Exception as exc:  # noqa: BLE001 - any failure is a result, not a crash
        _failed(rec, progress)
        rec.update(status="error", error=f"{type(exc).__name__} {progress.where()}: {exc}")
    rec["finished_at"] = now()
    return rec


def _failed(rec: dict[str, Any], progress: Progress) -> None:
    """Name where the cell failed; the whole traceback goes to the cell's log, its last frames to the record."""
    rec.update(failed_phase=progress.phase, failed_step=progress.step, traceback=traceback.format_exc(limit=-8))
    print(f"cell failed {progress.where()}:", file=sys.stderr)
    traceback.print_exc(file=sys.stderr)
    sys.stderr.flush()


def entry(cell_json: dict[str, Any], out_path: str, matrix: str, env: dict[str, str], log_path: str) -> None:
    """Process target: its own session (so a timeout kills its children too), output to the log."""
    os.setsid()
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    os.environ.clear()
    os.environ.update(env)
    rec = run_cell(Cell.from_json(cell_json), matrix)
    tmp = Path(out_path + ".tmp")
    tmp.write_text(json.dumps(rec, default=str))
    os.replace(tmp, out_path)
    sys.stdout.flush()
    sys.stderr.flush()
