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


@dataclass(frozen=True)
class Settings:
    """Training settings of one cell. `steps` are timed; `warmup_steps` run before and are not."""

    batch_size: int = 8
    seq_len: int = 128
    steps: int = 20
    warmup_steps: int = 3
    lr: float = 1e-4
    precision: Precision = "fp32"
    gradient_checkpointing: bool = False
    optimizer: Optimizer = "adamw"
    weight_decay: float = 0.0
    max_grad_norm: float | None = None
    eval_examples: int | None = 256  # None: the whole eval split; 0: no evaluation
    eval_batch_size: int = 32
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
        require(self.max_grad_norm is None or self.max_grad_norm > 0, "max_grad_norm", self.max_grad_norm,
                "must be > 0")
        require(self.threads is None or self.threads > 0, "threads", self.threads, "must be a positive integer")

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
        return f"{self.model.name}/{self.method.name}/{self.task.name}/b{s.batch_size}x{s.seq_len}/seed{self.seed}"

    def identity(self) -> dict[str, Any]:
        """Everything that defines the cell (and nothing else): the input of `cell_id`."""
        return {
            "model": self.model.record(),
            "method": self.method.method,
            "method_config": self.method.options,
            "task": self.task.record(),
            "settings": self.settings.record(),
            "seed": self.seed,
        }

    @property
    def cell_id(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        return {**self.identity(), "variant": self.method.name, "settings_overrides": self.method.settings}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Cell":
        return cls(
            model=ModelSpec(**d["model"]),
            method=MethodSpec(d["variant"], d["method"], d["method_config"], d.get("settings_overrides", {})),
            task=TaskSpec(d["task"]["name"], d["task"]["options"]),
            settings=Settings(**d["settings"]),
            seed=d["seed"],
        )
