"""Prefix tuning (Li & Liang, 2021) through peft: trainable key/value prefixes in every layer.

peft feeds the prefixes in as a key/value cache (`past_key_values`, or `cache` in newer
transformers). Whether a model's forward takes one depends on the model and the transformers
version (causal LMs do in transformers 5; most encoders' forwards no longer do, and some releases
still list the argument but reject or ignore it). A signature says too little, so `adapt` decides by
trying: one forward of two tokens through the wrapped model; a model that refuses is `unsupported`,
with the reason. Generation decodes with methods/_peft.py's own loop (peft's `generate` drops the
prefix under transformers 5.24).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.errors import UnsupportedError, require
from bench.method import CellContext, Method
from bench.registry import register_method
from methods._peft import DecodesPromptLearning, task_type, wrap


@dataclass(frozen=True)
class PrefixTuningOptions:
    num_virtual_tokens: int = 20
    projection: bool = False  # reparametrise the prefixes through a two-layer MLP (peft's prefix_projection)

    def __post_init__(self) -> None:
        require(self.num_virtual_tokens > 0, "num_virtual_tokens", self.num_virtual_tokens,
                "must be a positive integer")


def check_prefixes_reach_attention(model: Any, name: str) -> None:
    """Raise UnsupportedError unless the wrapped model runs a forward with its prefixes, and the
    prefixes get a gradient from it (a forward that silently drops past_key_values does not count)."""
    import torch
    import transformers

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ids = torch.ones((1, 2), dtype=torch.long, device=device)
    prefixes = [p for p in model.parameters() if p.requires_grad]
    try:
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids))
        out.logits.float().sum().backward()
        reached = any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in prefixes)
        why = "its forward ran but the prefixes got no gradient (the model ignores the cache)"
    except (TypeError, ValueError, RuntimeError, AttributeError, IndexError, KeyError) as exc:
        reached, why = False, f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
    finally:
        for p in prefixes:
            p.grad = None
        model.train(was_training)
    if not reached:
        raise UnsupportedError(f"prefix tuning passes prefixes as a key/value cache (past_key_values), which {name} "
                               f"({type(model.get_base_model()).__name__}) does not take in transformers "
                               f"{transformers.__version__}: {why}")


@register_method
class PrefixTuning(DecodesPromptLearning, Method):
    name = "prefix_tuning"
    Config = PrefixTuningOptions
    description = ("prefix tuning through peft (virtual key/value tokens per layer; models whose forward takes "
                   "past_key_values)")
    virtual_tokens = True

    def adapt(self, model: Any, ctx: CellContext) -> Any:
        from peft import PrefixTuningConfig

        cfg = self.config
        try:
            model = wrap(model, PrefixTuningConfig(task_type=task_type(ctx), num_virtual_tokens=cfg.num_virtual_tokens,
                                                   prefix_projection=cfg.projection))
        except (TypeError, ValueError, AttributeError) as exc:  # peft cannot build prefixes for this model
            raise UnsupportedError(f"peft cannot set up prefix tuning for {ctx.model.name}: {exc}") from None
        if ctx.device.type != "meta":  # the memory model builds on the meta device: nothing to run there
            check_prefixes_reach_attention(model, ctx.model.name)
        return model
