"""Held-out evaluation: accuracy and loss, for both heads.

Causal LMs are scored like lm-evaluation-harness's log-likelihood tasks: each label word's
continuation is scored after the prompt and the likelier one is the prediction. Rows are
left-padded so only the last few positions need logits (a 128k vocabulary times every position
would not fit).
"""
from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, ContextManager

import torch
import torch.nn.functional as F

from bench.catalog.batches import IGNORE, Batcher, Encoded, left_pad
from bench.catalog.tasks import Example
from bench.measure import generation


def _left_pad(rows: list[Encoded], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    ids, mask = left_pad([r.input_ids for r in rows], pad_id)
    labels, _ = left_pad([r.labels for r in rows], IGNORE)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return {k: v.to(device) for k, v in
            {"input_ids": ids, "attention_mask": mask, "labels": labels, "position_ids": position_ids}.items()}


def _causal_chunk(model: torch.nn.Module, batcher: Batcher, chunk: list[Example],
                  device: torch.device) -> tuple[int, float]:
    n_labels = len(batcher.task.label_words)
    rows = [batcher.encode(ex, label) for ex in chunk for label in range(n_labels)]
    batch = _left_pad(rows, batcher.tok.pad_id, device)
    keep = int((batch["labels"] != IGNORE).sum(-1).max()) + 1
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=batch["position_ids"], logits_to_keep=keep).logits[:, -keep:].float()
    targets = batch["labels"][:, -keep + 1:]
    logp = F.log_softmax(logits[:, :-1], dim=-1)
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    valid = targets != IGNORE
    total = (picked * valid).sum(-1).view(len(chunk), n_labels)
    count = valid.sum(-1).view(len(chunk), n_labels)
    gold = torch.tensor([ex.label for ex in chunk], device=device)
    correct = int((total.argmax(-1) == gold).sum())
    gold_loss = -(total / count).gather(-1, gold.unsqueeze(-1)).sum()
    return correct, float(gold_loss)


def _encoder_chunk(model: torch.nn.Module, batcher: Batcher, chunk: list[Example],
                   device: torch.device) -> tuple[int, float]:
    batch = batcher.collate([batcher.encode(ex) for ex in chunk], device)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    correct = int((logits.argmax(-1) == batch["labels"]).sum())
    loss = F.cross_entropy(logits, batch["labels"], reduction="sum")
    return correct, float(loss)


def evaluate(model: torch.nn.Module, batcher: Batcher, examples: list[Example], batch_size: int,
             device: torch.device, autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext,
             max_new_tokens: int = 64, decode: generation.Decode = generation.hf_generate) -> dict[str, Any]:
    """Accuracy and mean loss over `examples` (the loss of the gold label's tokens for causal LMs);
    on a generative task, accuracy by generation (bench/measure/generation.py) decoded by `decode`
    (the method's `generate`), with the generation's own throughput and a few outputs."""
    generative = batcher.task.generative
    was_training = model.training
    model.eval()
    correct, loss, extra = 0, 0.0, {}
    with torch.inference_mode(), autocast():
        if generative and examples:  # before the clock starts: it is not part of the evaluation
            generation.check_generate_matches_forward(model, batcher.prompt(examples[0]), device, decode)
        t0 = time.perf_counter()
        if generative:
            correct, extra = generation.score(model, batcher, examples, batch_size, device, max_new_tokens, decode)
        else:
            per_chunk = max(1, batch_size // len(batcher.task.label_words)) if batcher.kind == "causal" else batch_size
            step = _causal_chunk if batcher.kind == "causal" else _encoder_chunk
            for i in range(0, len(examples), per_chunk):
                c, l = step(model, batcher, examples[i:i + per_chunk], device)
                correct, loss = correct + c, loss + l
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - t0
    model.train(was_training)
    n = len(examples)
    if generative:
        extra["generated_tokens_per_s"] = extra["generated_tokens"] / elapsed if elapsed > 0 else None
    return {"accuracy": correct / n if n else None, "eval_loss": loss / n if n and not generative else None,
            "eval_examples": n, "eval_s": elapsed, "eval_examples_per_s": n / elapsed if elapsed > 0 else None,
            **extra}
