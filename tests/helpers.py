"""Small builders shared by the tests."""
from __future__ import annotations

import dataclasses
from typing import Any

from bench.config import Cell, MethodSpec, ModelSpec, Settings, TaskSpec

TINY = Settings(batch_size=4, seq_len=32, steps=3, warmup_steps=1, lr=1e-3, eval_examples=16, threads=2,
                timeout_s=120)


def cell(method: str, model: str = "tiny-llama", options: dict[str, Any] | None = None, task: str = "synthetic",
         seed: int = 0, **settings: Any) -> Cell:
    """A cell with the method's default options completed from its Config dataclass."""
    from bench import schema
    from bench.registry import method_class

    cls = method_class(method)
    resolved = dataclasses.asdict(schema.build(cls.Config, options or {}, method))
    return Cell(ModelSpec(model), MethodSpec(method, method, resolved), TaskSpec(task, {}),
                dataclasses.replace(TINY, **settings), seed)
