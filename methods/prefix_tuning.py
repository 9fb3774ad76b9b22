"""Prefix tuning (Li & Liang, 2021) through peft: trainable key/value prefixes in every layer.

peft feeds the prefixes in as `past_key_values`. Causal LMs still accept that (transformers 5
warns it is deprecated in favour of `cache`); most encoders' forward no longer takes it, and those
cells are `unsupported`.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from bench.errors import UnsupportedError
from bench.method import CellContext, Method, ModelInfo
from bench.registry import register_method
from bench.schema import require
from methods._peft import task_type, wrap


@dataclass(frozen=True)
class PrefixTuningOptions:
    num_virtual_tokens: int = 20
    projection: bool = False  # reparametrise the prefixes through a two-layer MLP (peft's prefix_projection)

    def __post_init__(self) -> None:
        require(self.num_virtual_tokens > 0, "num_virtual_tokens", self.num_virtual_tokens,
                "must be a positive integer")


def _takes_past(cls: Any) -> bool:
    return "past_key_values" in inspect.signature(cls.forward).parameters


def _encoder_reason(name: str, classes: list[Any]) -> str | None:
    """peft's test for a sequence classifier: its forward or its backbone's takes past_key_values."""
    if any(_takes_past(c) for c in classes):
        return None
    return (f"prefix tuning passes prefixes as past_key_values, which {name}'s "
            f"{' / '.join(c.__name__ for c in classes)} forward does not take in this transformers version")


@register_method
class PrefixTuning(Method):
    name = "prefix_tuning"
    Config = PrefixTuningOptions
    description = "prefix tuning through peft (virtual key/value tokens per layer; causal LMs)"

    def unsupported_reason(self, model: ModelInfo, settings: Any) -> str | None:
        if model.kind != "encoder":
            return None
        import transformers
        from transformers.models.auto import modeling_auto as auto

        names = [auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.get(model.model_type),
                 auto.MODEL_MAPPING_NAMES.get(model.model_type)]
        classes = [getattr(transformers, n, None) for n in names if isinstance(n, str)]
        if len(classes) != 2 or None in classes:
            return None  # custom code: adapt checks the loaded model
        return _encoder_reason(model.name, classes)

    def adapt(self, model: Any, ctx: CellContext) -> Any:
        from peft import PrefixTuningConfig

        if ctx.model.kind == "encoder":
            reason = _encoder_reason(ctx.model.name, [type(model), type(model.base_model)])
            if reason:
                raise UnsupportedError(reason)
        cfg = self.config
        return wrap(model, PrefixTuningConfig(task_type=task_type(ctx), num_virtual_tokens=cfg.num_virtual_tokens,
                                              prefix_projection=cfg.projection))
