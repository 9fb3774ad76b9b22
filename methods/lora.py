"""LoRA (Hu et al., 2021) through peft: low-rank updates on chosen linear layers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.errors import require
from bench.method import CellContext, Method
from bench.registry import register_method
from methods._peft import task_type, wrap


@dataclass(frozen=True)
class LoraOptions:
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"  # "all-linear" (every linear but the output head) or names

    def __post_init__(self) -> None:
        require(self.r > 0, "r", self.r, "must be a positive integer")
        require(0.0 <= self.dropout < 1.0, "dropout", self.dropout, "must be in [0, 1)")
        require(bool(self.target_modules), "target_modules", self.target_modules, "must name at least one module")

    def peft_config(self, ctx: CellContext) -> Any:
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=self.target_modules, task_type=task_type(ctx))


@register_method
class Lora(Method):
    name = "lora"
    Config = LoraOptions
    description = "LoRA through peft (rank, alpha, dropout, target modules)"

    def adapt(self, model: Any, ctx: CellContext) -> Any:
        return wrap(model, self.config.peft_config(ctx))
