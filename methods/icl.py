"""In-context learning: no parameter changes; k labelled train examples go in front of every
evaluation prompt, and the label words are scored after it, or the answer generated after it on a
generative task, where each demonstration carries its worked solution (causal LMs only). The
demonstrations go in whole: the batcher keeps the first of them that fit seq_len beside the longest
query (bench/catalog/batches.py), and the record says how many (`quality.shots_used`)."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from bench.catalog.tasks import Example, Task
from bench.errors import require
from bench.method import CellContext, Method, ModelInfo
from bench.registry import register_method


@dataclass(frozen=True)
class IclOptions:
    shots: int = 4  # demonstrations per prompt, at most (as many as fit seq_len whole); 0 is zero-shot

    def __post_init__(self) -> None:
        require(self.shots >= 0, "shots", self.shots, "must be >= 0 (0: zero-shot)")


def pick_demonstrations(train: list[Example], shots: int, n_labels: int, seed: int) -> list[Example]:
    """`shots` train examples, as balanced across labels as the split allows, in a seeded order."""
    rng = random.Random(seed)
    by_label: list[list[Example]] = [[] for _ in range(max(1, n_labels))]  # a generative task: one pool
    for ex in rng.sample(train, len(train)):
        by_label[ex.label].append(ex)
    picked: list[Example] = []
    while len(picked) < shots and any(by_label):
        for pool in by_label:  # round robin over labels; a label that runs out is skipped
            if pool and len(picked) < shots:
                picked.append(pool.pop())
    rng.shuffle(picked)  # no fixed label pattern for the model to copy
    return picked


@register_method
class InContextLearning(Method):
    name = "icl"
    Config = IclOptions
    trains = False
    description = "k-shot in-context learning: no training, demonstrations before every prompt"

    def unsupported_reason(self, model: ModelInfo, settings: Any) -> str | None:
        if model.kind != "causal":
            return (f"in-context learning scores label words with a causal LM; {model.name} is an "
                    f"{model.kind} ({model.model_type}) with a classification head, which needs training")
        return None

    def adapt(self, model: Any, ctx: CellContext) -> Any:
        model.requires_grad_(False)
        return model

    def demonstrations(self, task: Task, ctx: CellContext) -> list[Example]:
        return pick_demonstrations(task.train, self.config.shots, len(task.label_words), ctx.seed)
