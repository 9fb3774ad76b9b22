"""Accuracy by value (bench/measure/accuracy.py, bench/measure/generation.py): stub models with
fixed logits, so the accuracy and the loss each scoring path reports are known exactly. An
encoder's class logits, a causal LM's label-word log-likelihoods after the prompt (left-padded
rows, the last positions only), and greedy generation with the answer extracted: each stub reads
its answer off the row it is given, so a row scored against another row's gold label, a position
off by one or a chunk left out changes the figures."""
from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from bench.catalog.batches import Batcher
from bench.catalog.tasks import Example, Task
from bench.catalog.tokenizer import ByteTokenizer
from bench.measure.accuracy import evaluate
from bench.measure.generation import hf_generate

CPU = torch.device("cpu")
TOK = ByteTokenizer()
V = TOK.vocab_size
C = 4.0  # the stubs' one non-zero logit

# (text, gold label): the stubs answer 1 where the text has "good", else 0, so they are right on 7
# of these 10 and wrong on "so good" (0), "bad bad bad" (1) and "not bad" (1). Lengths differ:
# the causal rows are left-padded.
ROWS = [("good", 1), ("a bad film", 0), ("good plot, good actors", 1), ("bad", 0), ("so good", 0),
        ("bad bad bad", 1), ("the good one", 1), ("not bad", 1), ("bad idea", 0), ("good fun", 1)]
RIGHT = 7


def _task(label_words: list[str], rows: list[Example], **kw: Any) -> Task:
    return Task("stub", label_words, [], [], rows, False, {}, **kw)


def _says_good(ids: list[int]) -> bool:
    good = TOK.encode("good", False)
    return any(ids[i:i + len(good)] == good for i in range(len(ids)))


def _out(logits: torch.Tensor) -> Any:
    return type("Output", (), {"logits": logits})()


class EncoderStub(torch.nn.Module):
    """A classification head's logits: C for class 1 where the row has "good", else C for class 0."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        logits = torch.zeros(len(input_ids), 2)
        for i, row in enumerate(input_ids.tolist()):
            logits[i, int(_says_good(row))] = C
        return _out(logits)


class LabelWordStub(torch.nn.Module):
    """A causal LM with label words " n" and " y": after a space it puts C on "y" where the row has
    "good", else on "n"; every other position is uniform over the vocabulary."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                logits_to_keep: int) -> Any:
        space, n, y = TOK.encode(" ny", False)
        logits = torch.zeros(*input_ids.shape, V)
        for i, row in enumerate(input_ids.tolist()):
            letter = y if _says_good(row) else n
            for t, token in enumerate(row):
                if token == space and attention_mask[i, t]:
                    logits[i, t, letter] = C
        return _out(logits[:, -logits_to_keep:])


@pytest.mark.parametrize("batch_size", [4, 3, 32])  # chunks of 4, 4, 2; of 3 and a last of 1; one chunk
def test_encoder_scoring_gives_the_known_accuracy_and_loss(batch_size: int) -> None:
    batcher = Batcher(_task(["negative", "positive"], [Example(t, g) for t, g in ROWS]), TOK, "encoder", 32)
    out = evaluate(EncoderStub(), batcher, batcher.task.test, batch_size, CPU)
    assert out["accuracy"] == RIGHT / len(ROWS) and out["eval_examples"] == len(ROWS)
    # cross-entropy of logits (C, 0): log(1 + e^-C) for the class with C, log(1 + e^C) for the other
    right, wrong = math.log1p(math.exp(-C)), math.log1p(math.exp(C))
    assert out["eval_loss"] == pytest.approx((RIGHT * right + (len(ROWS) - RIGHT) * wrong) / len(ROWS), rel=1e-6)


@pytest.mark.parametrize("batch_size", [6, 4, 2])  # 3, 2 and 1 examples a chunk (two label rows each)
def test_causal_label_word_scoring_gives_the_known_accuracy_and_loss(batch_size: int) -> None:
    batcher = Batcher(_task(["n", "y"], [Example(t, g) for t, g in ROWS]), TOK, "causal", 48)
    out = evaluate(LabelWordStub(), batcher, batcher.task.test, batch_size, CPU)
    assert out["accuracy"] == RIGHT / len(ROWS) and out["eval_examples"] == len(ROWS)
    # the gold label's two tokens, averaged: the space after "Sentiment:" (uniform: log V), then its
    # letter after the space (log Z less C where the stub's letter is the gold one)
    z = math.log(math.exp(C) + V - 1)
    right, wrong = (math.log(V) + z - C) / 2, (math.log(V) + z) / 2
    assert out["eval_loss"] == pytest.approx((RIGHT * right + (len(ROWS) - RIGHT) * wrong) / len(ROWS), rel=1e-6)


# question -> what the scripted model writes after "Answer:", and the gold answer
SCRIPT = [
    ("2+2", " 2 + 2 = 4. The answer is 4.", "4"),  # right
    ("3+3", " The answer is 7.", "6"),  # wrong
    ("1+9", " 1 + 9 = 10", "10"),  # right: no statement, the last number
    ("5*5", " 5 * 5 = 25\n\nQuestion: 1+1 = 2", "25"),  # right: the next problem is not read
    ("1000+234", " The answer is 1234.", "1,234"),  # right: numbers compare as written in GSM8K
    ("9*9", " 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16. The answer is 81.", "81"),  # wrong: cut at 40 tokens
    ("7-7", " I do not know.", "0"),  # wrong: no number
]
MAX_NEW = 40


class ScriptedLM(torch.nn.Module):
    """A causal LM whose next token is the next byte of its script's answer to the row's question
    (then the end token): logits C on that token, 0 elsewhere. Its `generate` is greedy decoding over
    its own forward, so the decoding check before scoring passes."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        logits = torch.zeros(*input_ids.shape, V)
        for i, row in enumerate(input_ids.tolist()):
            tokens = [t for t, m in zip(row, attention_mask[i].tolist()) if m]
            start = len(row) - len(tokens)
            for t in range(len(tokens)):
                logits[i, start + t, self._next(tokens[:t + 1])] = C
        return _out(logits)

    @staticmethod
    def _next(prefix: list[int]) -> int:
        text = TOK.decode(prefix)
        if "\nAnswer:" not in text:
            return TOK.pad_id
        asked, written = text.rsplit("\nAnswer:", 1)
        question = asked.rsplit("Question: ", 1)[-1]
        answer = next((a for q, a, _ in SCRIPT if q == question), "")
        ids = TOK.encode(answer, False)
        written_ids = TOK.encode(written, False)
        return ids[len(written_ids)] if len(written_ids) < len(ids) else TOK.eos_id

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, generation_config: Any) -> Any:
        c = generation_config
        ends = set(c.eos_token_id or [])
        seq, mask, steps = input_ids, attention_mask, []
        done = torch.zeros(len(seq), dtype=torch.bool)
        for _ in range(c.max_new_tokens):
            last = self(input_ids=seq, attention_mask=mask).logits[:, -1]
            steps.append(last)
            token = last.argmax(-1)
            token[done] = c.pad_token_id if c.pad_token_id is not None else 0
            done |= torch.tensor([int(t) in ends for t in token])
            seq, mask = torch.cat([seq, token[:, None]], 1), torch.cat([mask, torch.ones_like(token)[:, None]], 1)
        if c.return_dict_in_generate:
            return type("Generated", (), {"sequences": seq, "logits": tuple(steps)})()
        return seq


@pytest.mark.parametrize("batch_size", [7, 3])
def test_generative_scoring_gives_the_known_accuracy_and_tokens(batch_size: int) -> None:
    rows = [Example(q, target=a, answer=gold) for q, a, gold in SCRIPT]
    task = _task([], rows, prompt="Question: {text}\nAnswer:", generative=True)
    batcher = Batcher(task, TOK, "causal", 160)
    out = evaluate(ScriptedLM(), batcher, rows, batch_size, CPU, max_new_tokens=MAX_NEW, decode=hf_generate)
    assert out["accuracy"] == 4 / 7 and out["eval_examples"] == 7 and out["eval_loss"] is None
    # every answer's bytes, up to the end token or the 40-token limit
    assert out["generated_tokens"] == sum(min(len(a.encode()), MAX_NEW) for _, a, _ in SCRIPT)
    assert out["samples"] == [
        {"question": "2+2", "output": SCRIPT[0][1], "extracted": "4", "answer": "4"},
        {"question": "3+3", "output": SCRIPT[1][1], "extracted": "7", "answer": "6"},
        {"question": "1+9", "output": SCRIPT[2][1], "extracted": "10", "answer": "10"},
    ]
