"""What a cell is: its settings, model, task and method specs. A leaf: it imports nothing of ours
but the error types, so every other module can use it without a cycle. Nothing here imports torch."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from bench.errors import require

Precision = Literal["fp32", "bf16-mixed", "bf16"]
Optimizer = Literal["adamw", "adamw8bit", "paged_adamw", "paged_adamw8bit"]


def is_paged(optimizer: str | None) -> bool:
    """An optimizer whose state bitsandbytes keeps in CUDA managed memory (paged)."""
    return bool(optimizer) and optimizer.startswith("paged")


Compile = Literal["off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
AttnImplementation = Literal["eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention"]
Loss = Literal["standard", "chunked", "liger"]
Padding = Literal["max_length", "longest", "packed"]
CpuAllocator = Literal["default", "release"]
Strategy = Literal["single", "ddp", "fsdp"]

# The speed and memory recipe axes, added after cells were first recorded: at their defaults they
# stay out of a cell's identity, so every cell recorded before keeps its id (resume, compare).
RECIPE_DEFAULTS: dict[str, Any] = {"compile": "off", "attn_implementation": None, "loss": "standard",
                                   "padding": "max_length", "activation_offload": False, "loss_chunks": 8,
                                   "target_accuracy": None, "target_every": 25, "target_examples": 200,
                                   "cpu_allocator": "default", "memory_pass_steps": 0, "strategy": "single", "nproc": 1, "nnodes": 1,
                                   "fsdp_cpu_offload": False, "max_new_tokens": 64,
                                   "general_tokens": 16384, "validation_examples": None}


@dataclass(frozen=True)
class Settings:
    """Training settings of one cell. `steps` are timed; `warmup_steps` run before and are not."""

    batch_size: int = 8
    seq_len: int = 128
    steps: int = 20
    warmup_steps: int = 3
    lr: float = 1e-4
    precision: Precision = "fp32"
    # activation checkpointing: false, true (every decoder layer) or k (every k-th layer)
    gradient_checkpointing: bool | int = False
    activation_offload: bool = False  # saved activations go to CPU memory (torch's save_on_cpu)
    compile: Compile = "off"  # torch.compile of the model, in this mode
    attn_implementation: AttnImplementation | None = None  # None: transformers' default for the model
    loss: Loss = "standard"  # the model's cross-entropy, a chunked one, or Liger's fused linear one
    loss_chunks: int = 8  # chunks of the chunked cross-entropy
    padding: Padding = "max_length"  # training batches: fixed shape, the batch's longest row, or packed
    # time to a target: every `target_every` steps (warm-up included) the model is scored on the
    # first `target_examples` validation examples, until the last step; the record says when accuracy
    # first reached `target_accuracy` (steps, training seconds, tokens, joules), or that it did not
    target_accuracy: float | None = None
    target_every: int = 25
    target_examples: int = 200
    # the CPU's memory figure is the resident set, which holds what glibc keeps of freed blocks; with
    # "release" glibc returns every freed block of 128 KiB and up to the OS (mallopt M_MMAP_THRESHOLD),
    # so the peak follows the live tensors as CUDA's peak allocated does, and steps run slower
    cpu_allocator: CpuAllocator = "default"
    # on the CPU, before the timed steps: this many training steps under "release" (at learning rate
    # 0, the optimizer and random state put back after them), whose peak is the record's memory figure
    # (memory.cpu_allocator says so), while the timed steps keep freed blocks as glibc's defaults do:
    # memory taken as the memory model predicts it, speed at the defaults' settled state; 0: none
    memory_pass_steps: int = 0
    # one cell over several ranks, launched by torchrun: DistributedDataParallel, or FSDP2 (fully_shard
    # per decoder layer); nproc ranks per node on nnodes nodes. batch_size is each rank's: the global
    # batch is batch_size x nproc x nnodes
    strategy: Strategy = "single"
    nproc: int = 1
    nnodes: int = 1
    fsdp_cpu_offload: bool = False  # FSDP2 keeps the sharded parameters (and their optimizer state) in CPU memory
    optimizer: Optimizer = "adamw"
    weight_decay: float = 0.0
    max_grad_norm: float | None = None
    eval_examples: int | None = 256  # None: the whole eval split; 0: no evaluation
    # after training, the first validation_examples of the validation split are scored too: what the
    # report chooses on (a sweep's best point, the summary's best); None: as many as eval_examples
    # (the whole validation split where that is None); 0: no validation pass
    validation_examples: int | None = None
    eval_batch_size: int = 32
    max_new_tokens: int = 64  # a generative task: tokens generated per answer at most (greedy)
    general_tokens: int = 16384  # forgetting: tokens of general text scored before and after training
    timeout_s: float = 1800.0
    threads: int | None = None  # CPU threads for torch (None: torch's default)

    def __post_init__(self) -> None:
        for name in ("batch_size", "seq_len", "steps", "eval_batch_size"):
            require(getattr(self, name) > 0, name, getattr(self, name), "must be a positive integer")
        require(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "must be >= 0")
        require(self.lr > 0, "lr", self.lr, "must be > 0")
        require(self.weight_decay >= 0, "weight_decay", self.weight_decay, "must be >= 0")
        require(self.timeout_s > 0, "timeout_s", self.timeout_s, "must be > 0")
        require(self.eval_examples is None or self.eval_examples >= 0, "eval_examples", self.eval_examples,
                "must be >= 0 (0 turns evaluation off)")
        require(self.validation_examples is None or self.validation_examples >= 0, "validation_examples",
                self.validation_examples, "must be >= 0 (0 turns the validation pass off; unset: as eval_examples)")
        require(self.max_grad_norm is None or self.max_grad_norm > 0, "max_grad_norm", self.max_grad_norm,
                "must be > 0")
        require(self.threads is None or self.threads > 0, "threads", self.threads, "must be a positive integer")
        gc = self.gradient_checkpointing
        require(isinstance(gc, bool) or gc >= 1, "gradient_checkpointing", gc,
                "must be false, true (every layer) or a positive integer k (every k-th layer)")
        if gc == 1 and not isinstance(gc, bool):
            object.__setattr__(self, "gradient_checkpointing", True)  # every 1st layer is every layer
        require(self.memory_pass_steps >= 0, "memory_pass_steps", self.memory_pass_steps,
                "must be >= 0 (0: no memory pass)")
        require(self.loss_chunks > 0, "loss_chunks", self.loss_chunks, "must be a positive integer")
        require(self.target_accuracy is None or 0 < self.target_accuracy <= 1, "target_accuracy",
                self.target_accuracy, "must be in (0, 1] (a fraction: 0.75 is 75%)")
        require(self.target_every > 0, "target_every", self.target_every, "must be a positive integer (steps)")
        require(self.target_examples > 0, "target_examples", self.target_examples, "must be a positive integer")
        require(self.max_new_tokens > 0, "max_new_tokens", self.max_new_tokens, "must be a positive integer")
        require(self.general_tokens > 1, "general_tokens", self.general_tokens, "must be an integer > 1")
        require(self.nproc >= 1, "nproc", self.nproc, "must be a positive integer (ranks per node)")
        require(self.nnodes >= 1, "nnodes", self.nnodes, "must be a positive integer (nodes)")
        require(self.strategy != "single" or self.world_size == 1, "strategy", self.strategy,
                f"runs one rank, and nproc x nnodes = {self.world_size}; choose 'ddp' or 'fsdp' to run several")
        require(not self.fsdp_cpu_offload or self.strategy == "fsdp", "fsdp_cpu_offload", self.fsdp_cpu_offload,
                f"needs strategy = 'fsdp' (strategy is {self.strategy!r})")

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes

    @property
    def distributed(self) -> bool:
        """Launched by torchrun (a ddp or fsdp cell, even of one rank)."""
        return self.strategy != "single"

    @property
    def checkpoint_every(self) -> int:
        """Every k-th decoder layer is checkpointed (0: none)."""
        gc = self.gradient_checkpointing
        return (1 if gc else 0) if isinstance(gc, bool) else gc

    def record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ModelSpec:
    """A model: a built-in name, a hub id ("org/name") or a local folder."""

    name: str
    id: str | None = None  # hub id or path; None for built-ins
    trust_remote_code: bool = False
    revision: str | None = None

    def record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "options": dict(self.options)}


@dataclass(frozen=True)
class MethodSpec:
    """One method row of a matrix: a variant name, the registered method and its options."""

    name: str
    method: str
    options: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)  # overrides for this row only
    ladder: str | None = None  # the recipe ladder this row is a rung of (a report section; not identity)
    rung: int | None = None  # its place on the ladder, from 0
    sweep: str | None = None  # the row's name when it is one point of that row's sweep (not identity)
    sweep_point: dict[str, Any] | None = None  # the swept keys and this point's values


@dataclass(frozen=True)
class Cell:
    model: ModelSpec
    method: MethodSpec
    task: TaskSpec
    settings: Settings
    seed: int

    @property
    def name(self) -> str:
        s = self.settings
        ranks = f"/{s.strategy}{s.world_size}" if s.distributed else ""  # e.g. fsdp8: 8 ranks, FSDP
        return (f"{self.model.name}/{self.method.name}/{self.task.name}/b{s.batch_size}x{s.seq_len}{ranks}"
                f"/seed{self.seed}")

    def identity(self) -> dict[str, Any]:
        """Everything that defines the cell (and nothing else): the input of `cell_id`."""
        return {
            "model": self.model.record(),
            "method": self.method.method,
            "method_config": self.method.options,
            "task": self.task.record(),
            "settings": {k: v for k, v in self.settings.record().items()
                         if k not in RECIPE_DEFAULTS or v != RECIPE_DEFAULTS[k]},
            "seed": self.seed,
        }

    @property
    def cell_id(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        return {**self.identity(), "variant": self.method.name, "settings_overrides": self.method.settings,
                "ladder": self.method.ladder, "rung": self.method.rung,
                "sweep": self.method.sweep, "sweep_point": self.method.sweep_point}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Cell":
        return cls(
            model=ModelSpec(**d["model"]),
            method=MethodSpec(d["variant"], d["method"], d["method_config"], d.get("settings_overrides", {}),
                              d.get("ladder"), d.get("rung"), d.get("sweep"), d.get("sweep_point")),
            task=TaskSpec(d["task"]["name"], d["task"]["options"]),
            settings=Settings(**d["settings"]),
            seed=d["seed"],
        )
