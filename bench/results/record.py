"""The result record of one cell, typed: every field the harness writes is declared once, here or in
the blocks beside it (memory.py, costs.py).

Writers (the worker, the runner, the launchers, the fixtures) fill a `Record`; readers (the
report, compare, capacity, selfcheck) get one from `Record.from_json`. Raw values with the unit in
the field name (bytes, seconds, fractions); display units belong to the report.

Reading is tolerant, so old, partial and newer records all load: a missing field is None (a block
is empty), and a field this version does not declare is kept in the block's `extra` and written
back as it came. A method's own notes (`CellContext.notes`, say `bottleneck_size`) are such
fields, at the top level of the record. An empty block is written as null. Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.results.block import Block
from bench.results.block import block as _block
from bench.results.costs import Energy, Target
from bench.results.memory import Memory


@dataclass
class Device(Block):
    kind: str | None = None  # "cuda" | "cpu"
    name: str | None = None
    driver: str | None = None  # CUDA: the NVIDIA driver's version (NVML), read by the cell's own process
    cuda: str | None = None  # CUDA: the CUDA version torch was built with


@dataclass
class Params(Block):
    trainable: int | None = None
    total: int | None = None


@dataclass
class TaskData(Block):
    """Where the task's data came from, and a hash of its splits (bench/catalog/tasks.py)."""

    source: str | None = None
    split_sha256: str | None = None
    sizes: dict[str, int] | None = None
    files_sha256: dict[str, str] | None = None
    files_match_published: bool | None = None
    # a hub dataset (bench/catalog/gsm8k.py): the commit loaded, the revision asked for (None: the default branch)
    hub_revision: str | None = None
    hub_revision_requested: str | None = None
    hub_version: str | None = None
    train_source: str | None = None
    train_revision: str | None = None  # the commit of a separate training dataset (MetaMathQA)


@dataclass
class Time(Block):
    """Step times of the timed steps (warm-up excluded) and what derives from them (bench/measure/timing.py)."""

    step_s: list[float] | None = None
    step_s_median: float | None = None
    step_s_iqr: float | None = None
    step_s_q1: float | None = None
    step_s_q3: float | None = None
    tokens_per_step: float | None = None
    tokens_per_s: float | None = None  # mean real tokens per timed step / median step time
    tokens_per_s_overall: float | None = None  # all timed tokens / summed step times
    train_s: float | None = None
    eval_s: float | None = None
    eval_examples_per_s: float | None = None
    validation_eval_s: float | None = None  # the validation pass after training (quality.validation_accuracy)
    eval_generated_tokens: int | None = None  # a generative task: tokens generated in the evaluation after training
    eval_generated_tokens_per_s: float | None = None
    eval_max_new_tokens: int | None = None
    padding_fraction: float | None = None  # padding positions / all positions of the timed steps
    compile_s: float | None = None  # time compilation added to the compile warm-up (not in any step time)
    compile_warmup_steps: int | None = None  # steps the compiled model took to run steadily
    setup_s: float | None = None  # from the process's start to the adapted model: spawn, imports, load, adapt
    setup_parts_s: dict[str, float | None] | None = None  # spawn, imports_and_plan, load (quantization included), adapt


@dataclass
class Quality(Block):
    accuracy: float | None = None
    accuracy_before: float | None = None
    eval_loss: float | None = None
    train_loss_first: float | None = None
    train_loss_last: float | None = None
    train_loss: list[float] | None = None
    eval_examples: int | None = None
    accuracy_note: str | None = None
    general_loss_before: float | None = None
    general_loss_after: float | None = None
    forgetting: float | None = None
    general_tokens: int | None = None
    general_text: str | None = None
    forgetting_note: str | None = None
    scored_by: str | None = None  # "generation" (greedy, exact match on the extracted answer); None: label words
    decoder: str | None = None  # what decoded, when scored by generation (the method's `decoder`)
    samples: list[dict[str, Any]] | None = None  # a generative task: the first outputs, their extracted and gold answers
    shots_used: int | None = None  # in-context learning: whole demonstrations before each query that fits
    # after training, on the first validation_examples of the validation split: what the report chooses on
    validation_accuracy: float | None = None
    validation_examples: int | None = None
    validation_note: str | None = None  # why there is no validation accuracy


@dataclass
class Rows(Block):
    """Rows longer than seq_len, cut to fit it (bench/catalog/batches.py): training rows as drawn (a
    row drawn twice counts twice), evaluation rows (the test split's) and validation rows as distinct
    examples (scored before and after training: once)."""

    train_rows: int | None = None
    train_rows_cut: int | None = None
    eval_rows: int | None = None
    eval_rows_cut: int | None = None
    validation_rows: int | None = None
    validation_rows_cut: int | None = None
    note: str | None = None


@dataclass
class Optimizer(Block):
    name: str | None = None
    paged_active: bool | None = None
    paged_note: str | None = None
    state_bytes_device: int | None = None
    state_bytes_managed: int | None = None  # paged state in CUDA managed memory: torch does not see it


@dataclass
class Flops(Block):
    flops_per_step: int | None = None
    achieved_tflops: float | None = None
    mfu: float | None = None
    peak_tflops: float | None = None
    mfu_note: str | None = None
    recomputed_flops_excluded: int | None = None  # the chunked loss' recomputed LM-head forward, not in flops_per_step


@dataclass
class Quant(Block):
    """How the base is quantized, where it is (the method's notes, bits measured by the harness)."""

    quant_type: str | None = None
    double_quant: bool | None = None
    blocksize: int | None = None
    threshold: float | None = None
    compute_dtype: str | None = None
    prepare_for_kbit: bool | None = None
    skip_modules: list[str] | None = None
    cpu_inference_repacking: str | None = None
    bits_per_param: float | None = None


@dataclass
class MemoryCap(Block):
    """The allocator cap of a capacity probe (bench/tools/capacity.py)."""

    cap_bytes: int | None = None
    device_total_bytes: int | None = None
    fraction: float | None = None
    note: str | None = None


@dataclass
class Slot(Block):
    index: int | None = None
    of: int | None = None
    env: dict[str, str] | None = None


@dataclass
class Ranks(Block):
    """A cell over several ranks (bench/parallel.py): how it was wrapped, every rank's peaks and step
    times (`per_rank`), their max / min / mean, and the global tokens per second."""

    strategy: str | None = None  # ddp | fsdp
    world_size: int | None = None
    backend: str | None = None  # nccl | gloo
    wrapped: str | None = None
    per_rank: list[dict[str, Any]] | None = None
    over_ranks: dict[str, dict[str, float]] | None = None  # figure -> {"max", "min", "mean"} over the ranks
    global_tokens_per_step: float | None = None
    global_tokens_per_s: float | None = None  # all ranks' real tokens per step over the slowest median step
    collectives_s: float | None = None
    collectives_note: str | None = None


@dataclass
class Executor(Block):
    name: str | None = None
    job_id: str | None = None
    folder: str | None = None


@dataclass
class Provenance(Block):
    """What produced the record, from the run's env.json (bench/exec/environment.py provenance()), so
    a record read alone can be attributed; the device and its driver are in `device`. Older records
    have none."""

    packages: dict[str, str | None] | None = None
    python: str | None = None
    platform: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    git_commit_from: str | None = None  # a tree without .git: where the commit came from (BENCH_GIT_COMMIT)
    run_started_at: str | None = None  # the invocation's start, as in env.json


@dataclass
class Record(Block):
    """One cell's result. `status`: ok | oom | error | timeout | unsupported."""

    cell_id: str | None = None
    name: str | None = None
    matrix: str | None = None
    variant: str | None = None
    ladder: str | None = None  # the recipe ladder the cell's method row is a rung of
    rung: int | None = None
    sweep: str | None = None  # the method row this cell is one grid point of
    sweep_point: dict[str, Any] | None = None  # that point: swept key -> value
    method: str | None = None
    method_config: dict[str, Any] | None = None
    model: str | None = None
    model_spec: dict[str, Any] | None = None
    task: str | None = None
    task_options: dict[str, Any] | None = None
    task_data: TaskData = _block(TaskData)
    seed: int | None = None
    settings: dict[str, Any] | None = None
    status: str | None = None
    error: str | None = None
    failed_phase: str | None = None  # plan | load | adapt | evaluation before | training | count | evaluation | save
    failed_step: int | None = None  # 0-based, warm-up included
    traceback: str | None = None  # the last frames; the cell's log holds the whole traceback
    device: Device = _block(Device)
    params: Params = _block(Params)
    memory: Memory = _block(Memory)
    time: Time = _block(Time)
    energy: Energy = _block(Energy)
    target: Target = _block(Target)
    quality: Quality = _block(Quality)
    rows: Rows = _block(Rows)
    optimizer: Optimizer = _block(Optimizer)
    flops: Flops = _block(Flops)
    quant: Quant = _block(Quant)
    memory_cap: MemoryCap = _block(MemoryCap)
    checkpoint_bytes: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration_s: float | None = None
    slot: Slot = _block(Slot)
    worker_pid: int | None = None
    executor: Executor = _block(Executor)
    ranks: Ranks = _block(Ranks)
    provenance: Provenance = _block(Provenance)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def cuda(self) -> bool:
        """Measured on a CUDA device (older records without a device block: where torch's peak exists)."""
        if self.device.kind is not None:
            return self.device.kind == "cuda"
        return self.memory.peak_allocated_bytes is not None

    def add_notes(self, notes: dict[str, Any]) -> None:
        """A method's notes: `quant` fills the quantization block, anything else is the method's own
        field at the top level of the record."""
        for key, value in notes.items():
            if key == "quant" and isinstance(value, dict):
                self.quant.set(**value)
            else:
                self.extra[key] = value
