"""Helpers shared by the methods built on peft (not a method: the leading underscore keeps it
out of discovery)."""
from __future__ import annotations

from typing import Any

from bench.method import CellContext


def task_type(ctx: CellContext) -> str:
    """peft's task type for the head the harness loaded."""
    return "SEQ_CLS" if ctx.model.kind == "encoder" else "CAUSAL_LM"


def wrap(model: Any, config: Any) -> Any:
    from peft import get_peft_model

    return get_peft_model(model, config)
