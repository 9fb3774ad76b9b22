"""Prompt tuning (Lester et al., 2021) through peft: trainable virtual-token embeddings."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from bench.errors import require
from bench.method import CellContext, Method
from bench.registry import register_method
from methods._peft import DecodesPromptLearning, task_type, wrap


@dataclass(frozen=True)
class PromptTuningOptions:
    num_virtual_tokens: int = 20
    init: Literal["random", "vocab", "text"] = "text"  # vocab: embeddings of random vocabulary tokens
    init_text: str | None = None  # for init = "text"; None: the task's instruction

    def __post_init__(self) -> None:
        require(self.num_virtual_tokens > 0, "num_virtual_tokens", self.num_virtual_tokens,
                "must be a positive integer")


@register_method
class PromptTuning(DecodesPromptLearning, Method):
    name = "prompt_tuning"
    Config = PromptTuningOptions
    description = "prompt tuning through peft (virtual tokens; init random, from the vocabulary or a text)"
    virtual_tokens = True

    def adapt(self, model: Any, ctx: CellContext) -> Any:
        import torch
        from peft import PromptTuningConfig

        cfg = self.config
        model = wrap(model, PromptTuningConfig(task_type=task_type(ctx), num_virtual_tokens=cfg.num_virtual_tokens))
        if cfg.init != "random":
            # Done here rather than by peft's TEXT init, which needs a hub tokenizer name.
            emb = model.get_input_embeddings().weight
            if cfg.init == "text":
                ids = ctx.tokenizer.encode(cfg.init_text or ctx.task_instruction, False)
                ids = (ids * (cfg.num_virtual_tokens // max(1, len(ids)) + 1))[: cfg.num_virtual_tokens]
            else:
                gen = torch.Generator().manual_seed(ctx.seed)
                ids = torch.randint(0, min(5000, emb.shape[0]), (cfg.num_virtual_tokens,), generator=gen).tolist()
            target = model.prompt_encoder[model.active_adapter].embedding.weight
            with torch.no_grad():
                target.copy_(emb[torch.tensor(ids, device=emb.device)].to(target.dtype))
        return model
