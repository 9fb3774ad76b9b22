"""Full fine-tuning: every parameter trains. Precision (fp32, bf16 mixed with fp32 master
weights, pure bf16) is the cell's `precision` setting, so one method covers all three."""
from __future__ import annotations

from typing import Any

from bench.method import CellContext, Method
from bench.registry import register_method


@register_method
class FullFineTuning(Method):
    name = "full"
    description = "all parameters trainable; precision variants via settings.precision"

    def adapt(self, model: Any, ctx: CellContext) -> Any:
        model.requires_grad_(True)
        return model
