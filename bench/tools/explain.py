"""`bench explain`: why a memory figure is what it is, and why two figures differ.

One cell: its measured peak beside the memory model's parts (parameters, gradients, optimizer state,
activations), the measured breakdown where CUDA recorded one, and what lies outside torch's peak
(quantization constants inside the parameters, allocator reserve, CUDA context and other
NVML-only memory, paged optimizer state in managed memory), with the largest gaps named.

Two cells (from two runs, or a run and a figure typed in with its settings): the settings and the
environment that differ, each setting's share of the difference as the memory model predicts it
(the settings changed one at a time, from the first cell's to the second's, in a fixed order), what
the accounting changes (torch against NVML, CPU against CUDA), and the part the model leaves
unexplained: the shares and that part add up to the measured difference exactly.

The measured figure is the record's headline peak (bench/results/peaks.py: torch peak allocated plus
managed optimizer state on CUDA, the peak RSS above the pre-load baseline on the CPU), and the
model's figure is put on the same accounting (`peaks.predicted_headline`: its peak, plus the state
it predicts in managed memory on CUDA), so a paged optimizer's state is neither a gap nor a share."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from bench.errors import BenchError
from bench.results.peaks import headline_peak, predicted_headline
from bench.results.record import Record
from bench.results.values import GIB, num
from bench.spec import Cell, MethodSpec, ModelSpec, Settings, TaskSpec

# The order settings change in, from the first cell's to the second's (the shares depend on it a
# little where effects interact, e.g. sequence length and precision both scale activations).
ORDER = ("batch_size", "seq_len", "padding", "precision", "gradient_checkpointing", "activation_offload",
         "loss", "loss_chunks", "optimizer", "attn_implementation", "compile")
NOT_MEMORY = {"steps", "warmup_steps", "lr", "weight_decay", "max_grad_norm", "eval_examples", "eval_batch_size",
              "timeout_s", "threads", "target_accuracy", "target_every", "target_examples", "max_new_tokens",
              "general_tokens"}
# what the memory model predicts is the tensors alive at the peak; these change only how much of the
# freed memory the measured figure also holds
ACCOUNTING = {"cpu_allocator", "memory_pass_steps"}  # what the figure holds of freed memory
ENV_KEYS = ("torch", "transformers", "peft", "bitsandbytes", "accelerate")


def cell_of(rec: Record) -> Cell:
    """The cell a record ran (settings this version does not know are dropped)."""
    known = {f.name for f in dataclasses.fields(Settings)}
    settings = Settings(**{k: v for k, v in (rec.settings or {}).items() if k in known})
    model = ModelSpec(**(rec.model_spec or {"name": rec.model}))
    return Cell(model, MethodSpec(str(rec.variant or rec.method), str(rec.method), dict(rec.method_config or {})),
                TaskSpec(str(rec.task), dict(rec.task_options or {})), settings, int(rec.seed or 0))


def _predict(cell: Cell, device: str) -> dict[str, Any]:
    import warnings

    from bench.predict import predict

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return predict(cell, device)


@dataclass
class Part:
    name: str
    bytes: float
    note: str = ""


@dataclass
class Explanation:
    title: str
    lines: list[str] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    measured_bytes: float = math.nan
    unexplained_bytes: float = math.nan

    def text(self) -> str:
        out = [self.title, *self.lines]
        if self.parts:
            width = max(len(p.name) for p in self.parts)
            out += [f"  {p.name:<{width}} {p.bytes / GIB:+10.4f} GiB  {p.note}".rstrip() for p in self.parts]
        return "\n".join(out)


def _gib(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value / GIB:.4f} GiB"


def one(rec: Record) -> Explanation:
    """A cell's measured peak against the memory model's parts, the gaps largest first."""
    if rec.status != "ok":
        raise BenchError(f"{rec.name}: status {rec.status}; only a cell that finished has a peak to explain")
    measured, source = headline_peak(rec)
    device = "cuda" if rec.cuda else "cpu"
    predicted = _predict(cell_of(rec), device)
    total = predicted_headline(predicted, rec.cuda)
    ex = Explanation(f"{rec.name}: measured peak {_gib(measured)} ({source}), "
                     f"predicted {_gib(total)}", measured_bytes=measured)
    b, w, m = rec.memory.breakdown, rec.memory.weights, rec.memory
    rows = []
    for name, key in (("parameters", "parameters_bytes"), ("gradients", "gradients_bytes"),
                      ("optimizer state", "optimizer_bytes"), ("activations", "activations_bytes")):
        got, want = num(getattr(b, key)), num(predicted[key])
        rows.append((name, want, got))
    if math.isnan(rows[-1][2]):  # no activations measured (the CPU): the peak less the known parts
        known = sum(got for _, _, got in rows[:-1] if not math.isnan(got))
        rows[-1] = ("activations + the rest", rows[-1][1], measured - known)
    recorded = "CUDA breakdown at the peak" if rec.cuda else "tensor sizes; the rest is the peak less them"
    ex.lines.append(f"  {'part':<24} {'predicted':>12} {'recorded':>12}   (recorded: {recorded})")
    for name, want, got in rows:
        ex.lines.append(f"  {name:<24} {_gib(want):>12} {_gib(got):>12}")
    gaps = [(abs(got - want), name, got - want) for name, want, got in rows
            if not math.isnan(got) and not math.isnan(want) and abs(got - want) >= 2**20]
    outside = [("quantization constants (in parameters)", num(w.quant_constants_bytes)),
               ("allocator reserve (reserved - allocated)", num(m.peak_reserved_bytes) - num(m.peak_allocated_bytes)),
               ("CUDA context and other NVML-only memory", num(m.nvml_process_peak_bytes) - num(m.peak_reserved_bytes)),
               ("paged optimizer state (managed memory)", num(rec.optimizer.state_bytes_managed))]
    for name, value in outside:
        if not math.isnan(value) and value:
            ex.lines.append(f"  {name:<40} {_gib(value):>12}")
    ex.unexplained_bytes = measured - total
    if gaps:
        worst = sorted(gaps, reverse=True)[:2]
        ex.lines.append("  largest gaps (recorded - predicted): "
                        + "; ".join(f"{name} {diff / GIB:+.4f} GiB" for _, name, diff in worst))
    # the allocator the figure was taken under (a memory pass takes it under release); older records: the setting
    taken = rec.memory.cpu_allocator or (rec.settings or {}).get("cpu_allocator", "default")
    if not rec.cuda and taken == "default":
        ex.lines.append("  on the CPU the peak is one resident-set figure, and 'the rest' holds what glibc keeps of "
                        "freed tensors (its dynamic mmap threshold moves large blocks onto the heap, which it does "
                        "not give back): the setting cpu_allocator = \"release\" takes most of it away, at a cost "
                        "in step time")
    ex.lines.append(f"  measured - predicted: {_gib(ex.unexplained_bytes)}")
    return ex


def _settings_changes(a: Cell, b: Cell) -> list[str]:
    sa, sb = dataclasses.asdict(a.settings), dataclasses.asdict(b.settings)
    keys = [k for k in ORDER if sa.get(k) != sb.get(k)]
    return keys + [k for k in sa if k not in ORDER and k not in NOT_MEMORY | ACCOUNTING and sa[k] != sb.get(k)]


def two(a: Record, b: Record, env_a: dict[str, Any] | None = None, env_b: dict[str, Any] | None = None,
        b_measured: float | None = None) -> Explanation:
    """Why b's peak differs from a's: each differing setting's predicted share, and the rest."""
    if a.status != "ok":
        raise BenchError(f"{a.name}: status {a.status}; only a cell that finished has a peak to explain")
    cell_a, cell_b = cell_of(a), cell_of(b)
    if (cell_a.model, cell_a.method.method, cell_a.method.options) != (cell_b.model, cell_b.method.method,
                                                                     cell_b.method.options):
        raise BenchError("the two cells differ in model or method; explain compares one model and method under "
                         "different settings (use `bench explain` on each cell for its own parts)")
    measured_a, source_a = headline_peak(a)
    measured_b, source_b = (b_measured, "the figure given") if b_measured is not None else headline_peak(b)
    device = "cuda" if a.cuda else "cpu"
    diff = measured_b - measured_a
    ex = Explanation(f"{b.name or 'the figure given'} against {a.name}: {_gib(measured_b)} - {_gib(measured_a)} "
                     f"= {diff / GIB:+.4f} GiB", measured_bytes=diff)
    if source_a != source_b:
        ex.lines.append(f"  accounting differs: {source_a!r} against {source_b!r} (not comparable figures)")
    for key in sorted(ACCOUNTING):
        va, vb = getattr(cell_a.settings, key), getattr(cell_b.settings, key)
        if va != vb:
            ex.lines.append(f"  accounting differs: {key} {va} -> {vb} (what the figure holds of freed memory; "
                            "the memory model predicts the live tensors, so this lands in 'unexplained')")
    for key in ENV_KEYS:
        va = ((env_a or {}).get("packages") or {}).get(key)
        vb = ((env_b or {}).get("packages") or {}).get(key)
        if va != vb and (va or vb):
            ex.lines.append(f"  environment: {key} {va} -> {vb} (the memory model does not see versions)")
    if a.device.name != b.device.name and b.device.name:
        ex.lines.append(f"  device: {a.device.name} -> {b.device.name}")
    current = cell_a
    before = predicted_headline(_predict(current, device), a.cuda)
    for key in _settings_changes(cell_a, cell_b):
        current = dataclasses.replace(current, settings=dataclasses.replace(current.settings,
                                                                            **{key: getattr(cell_b.settings, key)}))
        after = predicted_headline(_predict(current, device), a.cuda)
        ex.parts.append(Part(f"{key}: {getattr(cell_a.settings, key)} -> {getattr(cell_b.settings, key)}",
                             after - before, "predicted share"))
        before = after
    explained = sum(p.bytes for p in ex.parts)
    ex.unexplained_bytes = diff - explained
    ex.parts.append(Part("unexplained", ex.unexplained_bytes, "measured difference - predicted shares"))
    share = abs(ex.unexplained_bytes) / abs(diff) if diff else math.nan
    ex.lines.append(f"  the memory model explains {explained / GIB:+.4f} GiB of it; "
                    f"{'' if math.isnan(share) else f'{100 * share:.1f}% is '}left unexplained")
    return ex
