"""Accuracy by generation (generative tasks: arith, gsm8k): batched greedy decoding with left
padding, the answer extracted from the generated text and matched exactly against the gold answer,
as lm-evaluation-harness and peft's method comparison score GSM8K.

Rows are left-padded so every row's prompt ends where generation starts; transformers' `generate`
takes the positions from the attention mask, so a padded row is decoded as it would be alone (the
tests compare the two). The record keeps accuracy, the number scored, a few example outputs, and
the generation's own throughput (generated tokens per second).
"""
from __future__ import annotations

import re
from typing import Any, Callable

import torch

from bench.catalog.batches import Batcher, left_pad
from bench.catalog.tasks import Example

SAMPLES = 3  # example outputs kept in the record
_ANSWER = re.compile(r"answer is:?\s*\$?\s*(-?[\d,]*\.?\d+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_NEXT = re.compile(r"\n\s*Question:")  # where a model goes on to a new problem


def normalize(number: str) -> str:
    """'1,234' -> '1234', '12.0' -> '12', '-3.50' -> '-3.5'."""
    text = number.replace(",", "").strip().rstrip(".")
    if text.startswith((".", "-.")):
        text = text.replace(".", "0.", 1)
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def extract_answer(text: str) -> str | None:
    """The number after the first 'The answer is', else the last number, in the output up to
    where it starts another problem; None when there is no number."""
    text = _NEXT.split(text, maxsplit=1)[0]
    found = _ANSWER.search(text)
    if found:
        return normalize(found.group(1))
    numbers = _NUMBER.findall(text)
    return normalize(numbers[-1]) if numbers else None


def greedy(max_new_tokens: int, pad_id: int | None, eos_ids: list[int], **extra: Any) -> Any:
    """Plain greedy decoding: every field that could make it something else set, so nothing of the
    model's own generation config (a repetition penalty, say) is merged in."""
    from transformers import GenerationConfig

    return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad_id,
                            eos_token_id=eos_ids or None, repetition_penalty=1.0, no_repeat_ngram_size=0,
                            length_penalty=1.0, **extra)


def end_ids(model: torch.nn.Module, eos_id: int | None) -> list[int]:
    """The tokenizer's end-of-sequence token and every end token the model's generation config names
    (instruct models have several)."""
    ids = [] if eos_id is None else [eos_id]
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for i in configured if isinstance(configured, (list, tuple)) else [configured]:
        if i is not None and int(i) not in ids:
            ids.append(int(i))
    return ids


Decode = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, Any], Any]  # Method.generate's signature


def hf_generate(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, config: Any) -> Any:
    """transformers' `generate` (what a method decodes with unless it says otherwise)."""
    return model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)


def generate(model: torch.nn.Module, prompts: list[list[int]], pad_id: int, eos_id: int | None,
             max_new_tokens: int, device: torch.device, decode: Decode) -> list[list[int]]:
    """Greedy continuations of `prompts`, decoded as one left-padded batch by `decode` (the method's
    `generate`); each cut at its first end token."""
    ids, mask = left_pad(prompts, pad_id)
    width = ids.shape[1]
    ends = end_ids(model, eos_id)
    out = decode(model, ids.to(device), mask.to(device), greedy(max_new_tokens, pad_id, ends))
    rows = []
    for row in out[:, width:].tolist():
        stop = next((i for i, t in enumerate(row) if t in ends), len(row))
        rows.append(row[:stop])  # what follows the first end token is padding
    return rows


CHECK_TOKENS = 4  # the first tokens come from the prompt's forward, the next from generate's cache


def check_generate_matches_forward(model: torch.nn.Module, prompt: list[int], device: torch.device,
                                   decode: Decode) -> None:
    """Decoding must compute what the model's forward computes: the logits of its first few greedy
    tokens against one forward over the prompt and those tokens. Where a method's forward and
    generation part ways, accuracy by generation would score another model: refuse. (transformers
    5.24's `generate` passes its own `cache` and ignores a `past_key_values` beside it, which is how
    peft hands over a prefix; and peft, finding no `past_key_values`, puts prompt tuning's virtual
    tokens in front of every new token again: those two methods decode with their own `generate`.)"""
    from bench.errors import UnsupportedError

    ids = torch.tensor([prompt], device=device)
    config = greedy(CHECK_TOKENS, None, [], output_logits=True, return_dict_in_generate=True)
    out = decode(model, ids, torch.ones_like(ids), config)
    steps = torch.stack([step[0] for step in out.logits]).float()  # the logits of each generated token
    new = out.sequences[0, -len(out.logits):].tolist()
    # the same tokens through one plain forward: what the model computes for each of them
    whole = torch.tensor([prompt + new[:-1]], device=device)
    logits = model(input_ids=whole, attention_mask=torch.ones_like(whole)).logits
    forward = logits[0, -len(new):].float()
    gap = float((steps - forward).abs().max())
    # a few units in the last place of the compute dtype (bf16: 2^-8 relative) of the largest logit;
    # a dropped prefix moves logits by far more (0.29 of ~1 on the tiny test model)
    ulp = torch.finfo(logits.dtype).eps
    if gap > max(1e-3, 4 * ulp) * max(1.0, float(forward.abs().max())):
        raise UnsupportedError(f"accuracy by generation: decoding does not compute this model's forward (the logits "
                               f"of its first {len(new)} tokens differ by up to {gap:.3g}); with these transformers "
                               "and peft versions, generation mishandles what the method adds to the forward")


def score(model: torch.nn.Module, batcher: Batcher, examples: list[Example], batch_size: int, device: torch.device,
          max_new_tokens: int, decode: Decode) -> tuple[int, dict[str, Any]]:
    """How many of `examples`, decoded by `decode` (the method's `generate`) in batches, have the gold
    answer as their extracted one; and the generation's own figures: tokens generated, a few outputs.
    The caller (bench/measure/accuracy.py's `evaluate`) puts the model in eval mode and times it."""
    correct = generated = 0
    samples: list[dict[str, Any]] = []
    for i in range(0, len(examples), batch_size):
        chunk = examples[i:i + batch_size]
        outputs = generate(model, [batcher.prompt(ex) for ex in chunk], batcher.tok.pad_id, batcher.tok.eos_id,
                           max_new_tokens, device, decode)
        for ex, ids in zip(chunk, outputs):
            text = batcher.tok.decode(ids)
            got = extract_answer(text)
            correct += got is not None and got == normalize(ex.answer)
            generated += len(ids)
            if len(samples) < SAMPLES:
                samples.append({"question": ex.text, "output": text, "extracted": got, "answer": ex.answer})
    return correct, {"generated_tokens": generated, "samples": samples, "max_new_tokens": max_new_tokens}
