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


def decode_prompt_learning(model: Any, input_ids: Any, attention_mask: Any, config: Any) -> Any:
    """Greedy decoding for peft's prompt tuning and prefix tuning, over the base model's key/value
    cache, returning what transformers' `generate` returns for `config`.

    Why not `model.generate`: from transformers 5.24 `generate` hands the model its cache as `cache`,
    and peft 0.21 still looks for `past_key_values`; so it puts prompt tuning's virtual tokens in front
    of every new token again, and drops prefix tuning's prefix. Decoding here computes what peft's
    forward computes, the way training saw it: the virtual tokens (prompt tuning's embeddings, or
    prefix tuning's keys and values in the cache) come first, and a row's own tokens take positions
    num_virtual_tokens, num_virtual_tokens + 1, ... whatever its left padding, so a padded row is
    decoded as it would be alone. The harness checks the logits against one forward anyway
    (bench/measure/generation.py)."""
    import inspect

    import torch
    from peft import PeftType
    from transformers import DynamicCache
    from transformers.generation.utils import GenerateDecoderOnlyOutput

    if config.do_sample or config.num_beams != 1:
        raise ValueError("the prompt-learning decoder is greedy: do_sample must be False and num_beams 1")
    peft_config = model.active_peft_config
    base = model.get_base_model()
    n = peft_config.num_virtual_tokens
    rows = input_ids.shape[0]
    device = input_ids.device
    mask = torch.cat([attention_mask.new_ones(rows, n), attention_mask], dim=1)
    positions = (n + attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, n)  # pads: never attended
    params = inspect.signature(base.forward).parameters
    cache_arg = "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5.24
    extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
    inputs: dict[str, Any]
    if peft_config.peft_type == PeftType.PREFIX_TUNING:
        cache = model.get_prompt(batch_size=rows)  # a cache holding every layer's prefix keys and values
        inputs = {"input_ids": input_ids}
    elif peft_config.peft_type == PeftType.PROMPT_TUNING:
        cache = DynamicCache(config=base.config)
        embeds = base.get_input_embeddings()(input_ids)
        inputs = {"inputs_embeds": torch.cat([model.get_prompt(batch_size=rows).to(embeds.dtype), embeds], dim=1)}
        positions = torch.cat([torch.arange(n, device=device).expand(rows, n), positions], dim=1)
    else:
        raise ValueError(f"no decoder for peft type {peft_config.peft_type}")
    eos = config.eos_token_id
    ends = torch.tensor([] if eos is None else [eos] if isinstance(eos, int) else list(eos), dtype=torch.long,
                        device=device)
    pad = config.pad_token_id
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    tokens, logits = [], []
    for _ in range(config.max_new_tokens):
        out = base(**inputs, attention_mask=mask, position_ids=positions, use_cache=True, **{cache_arg: cache}, **extra)
        step = out.logits[:, -1]
        token = step.argmax(-1)
        if pad is not None:
            token = token.masked_fill(done, pad)  # a finished row goes on with padding, as `generate` does
        tokens.append(token)
        if config.output_logits:
            logits.append(step)
        done |= torch.isin(token, ends)
        if bool(done.all()):
            break
        inputs = {"input_ids": token[:, None]}
        mask = torch.cat([mask, mask.new_ones(rows, 1)], dim=1)
        positions = positions[:, -1:] + 1
    sequences = torch.cat([input_ids, torch.stack(tokens, dim=1)], dim=1)
    if config.return_dict_in_generate:
        return GenerateDecoderOnlyOutput(sequences=sequences, logits=tuple(logits) if config.output_logits else None)
    return sequences


class DecodesPromptLearning:
    """Mixed into a peft prompt-learning method (prompt tuning, prefix tuning): it decodes with
    `decode_prompt_learning` instead of peft's `generate`."""

    decoder = "bench greedy decoder over the base model's key/value cache (methods/_peft.py)"

    def generate(self, model: Any, input_ids: Any, attention_mask: Any, config: Any) -> Any:
        return decode_prompt_learning(model, input_ids, attention_mask, config)
