"""A record's headline peak, decided once: the training-memory figure the report shows, `bench compare`
judges, `bench selfcheck` measures on both of its sides, `bench explain` explains and `bench capacity`
keeps for every probe. Torch-free.

- CUDA: torch's peak allocated over the training steps plus the optimizer state in CUDA managed
  memory (paged optimizers, `optimizer.state_bytes_managed`, as bench/optim.py's `state_bytes`
  counts it after training), which torch's counters do not see. So a paged optimizer never shows a
  saving only torch sees, and its managed state growing is the peak growing, whether NVML has a
  figure or not.
- CPU: the peak resident set of the training steps above the resident set just before the model
  loaded, less the library code paged in since (`memory.library_code_bytes`); there is no managed
  memory: bitsandbytes falls back to ordinary state on the CPU. Taken under the glibc allocator
  `memory.cpu_allocator` names (a memory pass: "release").

And how much of a change in the CPU figure is noise (`noise_floor`), derived from the runs compared.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, NamedTuple

from bench.results.record import Record
from bench.results.values import num

TORCH = "torch peak allocated"
TORCH_MANAGED = "torch peak allocated + managed optimizer state"
CPU = "peak RSS above the pre-load baseline"
# The CPU floor where neither run repeats a cell: identical runs of tiny-llama's LoRA cell moved its
# peak RSS by up to 2.5 MiB of about 25 MiB (10%), the allocator keeping pages as it pleases. A
# fraction of the figure scales with the model, as the pages kept do; a constant would not.
RSS_NOISE_FRACTION = 0.10


class Peak(NamedTuple):
    bytes: float  # NaN where the record lacks the figure
    source: str  # what the figure is, in words


def managed_bytes(rec: Record) -> float:
    """Optimizer state in CUDA managed memory (paged optimizers), which torch's counters miss; 0 if none."""
    value = num(rec.optimizer.state_bytes_managed)
    return 0.0 if math.isnan(value) else value


def headline(cuda: bool, peak_allocated: Any, managed: Any, rss_above_baseline: Any) -> Peak:
    """The headline peak from its raw figures (a record's, or the bare loop's of `bench selfcheck`)."""
    if not cuda:
        return Peak(num(rss_above_baseline), CPU)
    torch_peak, extra = num(peak_allocated), num(managed)
    if extra > 0 and not math.isnan(torch_peak):
        return Peak(torch_peak + extra, TORCH_MANAGED)
    return Peak(torch_peak, TORCH)


def headline_peak(rec: Record) -> Peak:
    """A record's headline peak and where it comes from."""
    m = rec.memory
    return headline(rec.cuda, m.peak_allocated_bytes, rec.optimizer.state_bytes_managed,
                    m.peak_rss_above_baseline_bytes)


def predicted_headline(predicted: Mapping[str, Any], cuda: bool) -> float:
    """The memory model's figure on the headline's accounting: its peak (torch's allocator), plus on
    CUDA the optimizer state it predicts in managed memory."""
    peak, managed = num(predicted.get("peak_bytes")), num(predicted.get("optimizer_managed_bytes"))
    return peak + managed if cuda and managed > 0 else peak


def repeat_key(rec: Record) -> str:
    """Everything that defines a cell but its seed: the cells of a run that repeat one another."""
    defines = (rec.model, rec.variant, rec.method, rec.method_config, rec.task, rec.settings, rec.model_spec,
               rec.task_options)
    if all(v is None for v in defines):
        return json.dumps([rec.cell_id])
    return json.dumps([rec.matrix, *defines], sort_keys=True, default=str)


def spreads(records: Iterable[Record]) -> dict[str, tuple[float, int]]:
    """Per repeat group of at least two ok records with a headline figure: (largest - smallest, count)."""
    figures: dict[str, list[float]] = {}
    for rec in records:
        value = headline_peak(rec).bytes
        if rec.ok and not math.isnan(value):
            figures.setdefault(repeat_key(rec), []).append(value)
    return {k: (max(v) - min(v), len(v)) for k, v in figures.items() if len(v) >= 2}


@dataclass(frozen=True)
class Floor:
    bytes: float  # a change of the headline peak at most this large is noise
    source: str  # how it was derived, in words


def noise_floor(base: Record, base_spreads: Mapping[str, tuple[float, int]],
                current_spreads: Mapping[str, tuple[float, int]]) -> Floor:
    """The noise floor of a CPU cell's headline peak: the spread (largest - smallest) of its seeds, the
    cells that differ only in seed, in the baseline; in the current run where the baseline does not
    repeat the cell (the baseline's first: a change that moved one seed would widen the current
    run's spread and hide itself); where neither does, RSS_NOISE_FRACTION of the baseline figure.
    CUDA figures have none: torch's counters are exact."""
    if base.cuda:
        return Floor(0.0, "none: torch's counters are exact")
    key = repeat_key(base)
    for side, found in (("baseline", base_spreads), ("current run", current_spreads)):
        if key in found:
            spread, n = found[key]
            return Floor(spread, f"spread of the cell's {n} seeds in the {side}")
    return Floor(RSS_NOISE_FRACTION * headline_peak(base).bytes,
                 f"{RSS_NOISE_FRACTION:.0%} of the baseline figure (neither run repeats the cell's seeds)")
