"""The interface every fine-tuning method implements.

A method builds and adapts a model; the harness owns loading, the training loop and every
measurement. Every hook has a no-op default, so a method overrides only what it changes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # torch stays out of import time for config validation and `bench list`
    import torch
    from torch import nn

    from bench.catalog.tasks import Example, Task
    from bench.spec import Settings


@dataclass(frozen=True)
class ModelInfo:
    """What is known about a model before its weights load (from its config alone)."""

    name: str
    kind: str  # "causal" (decoder LM) or "encoder" (sequence classification head)
    model_type: str  # transformers' config.model_type, e.g. "llama", "bert"
    hidden_size: int
    num_layers: int
    vocab_size: int
    random_weights: bool


@dataclass
class CellContext:
    """What a method may read while it builds the model for one cell."""

    model: ModelInfo
    settings: "Settings"
    device: "torch.device"
    weights_dtype: "torch.dtype"  # dtype the base weights load in (fp32 for fp32 and bf16-mixed)
    compute_dtype: "torch.dtype"  # dtype matmuls run in
    seed: int
    notes: dict[str, Any] = field(default_factory=dict)  # extra record fields a method reports
    tokenizer: Any = None  # bench.catalog.tokenizer.Tokenizer, set before `adapt`
    task_instruction: str = ""  # what the task asks, in words (the task's business, not a method's)


@dataclass(frozen=True)
class NoOptions:
    """Options of a method that takes none."""


class Method:
    """Base class; subclass it in `methods/<name>.py` and decorate with `@register_method`."""

    name: ClassVar[str]
    Config: ClassVar[type] = NoOptions
    description: ClassVar[str] = ""
    trains: ClassVar[bool] = True  # False for methods that never update parameters (ICL)
    virtual_tokens: ClassVar[bool] = False  # True where trained tokens go in front of each row (prompt, prefix)
    origin: ClassVar[str | None] = None
    decoder: ClassVar[str] = "transformers generate"  # what `generate` runs, for the record

    def __init__(self, config: Any) -> None:
        self.config = config

    def unsupported_reason(self, model: ModelInfo, settings: "Settings") -> str | None:
        """Why this method cannot run on that model with these settings, or None."""
        return None

    def load_kwargs(self, ctx: CellContext) -> dict[str, Any]:
        """Extra keyword arguments for `from_pretrained` (a quantization config, say)."""
        return {}

    def adapt(self, model: "nn.Module", ctx: CellContext) -> "nn.Module":
        """Freeze, wrap or insert modules; return the model to train."""
        return model

    def trainable_parameters(self, model: "nn.Module") -> list["torch.nn.Parameter"]:
        return [p for p in model.parameters() if p.requires_grad]

    def demonstrations(self, task: "Task", ctx: CellContext) -> list["Example"]:
        """Examples put in front of every evaluation prompt (in-context learning)."""
        return []

    def generate(self, model: "nn.Module", input_ids: "torch.Tensor", attention_mask: "torch.Tensor",
                 config: Any) -> Any:
        """Greedy decoding for accuracy by generation (`config`: a transformers GenerationConfig):
        transformers' `generate`, returning what it returns. A method whose additions `generate`
        mishandles decodes itself (and names it in `decoder`); the harness checks either against the
        model's forward before it scores anything (bench/measure/generation.py)."""
        from bench.measure.generation import hf_generate

        return hf_generate(model, input_ids, attention_mask, config)
