"""Batches: examples turned into fixed-shape tensors for either head.

Encoders classify with a sequence-classification head. Causal LMs read a prompt and are trained
and scored on the label word that follows it (log-likelihood of each label's continuation).
torch is imported inside the functions that build tensors.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

from bench.catalog.tasks import Example, Task
from bench.errors import UnsupportedError

if TYPE_CHECKING:
    import torch

    from bench.catalog.tokenizer import Tokenizer

IGNORE = -100

@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]  # token labels (causal) or [class] (encoder)


@dataclass
class Batcher:
    """Turns examples into fixed-shape tensors (padded to seq_len) for one model kind."""

    task: Task
    tok: "Tokenizer"
    kind: str  # "causal" | "encoder"
    seq_len: int
    demos: list[Example] = field(default_factory=list)

    def _generative(self, ex: Example, with_target: bool = True) -> Encoded:
        """The prompt (after any demonstrations, each with its worked target), then the target and
        an end-of-sequence token; the loss is on the target only."""
        before, after = self.task.prompt.split("{text}")
        ids = self.tok.encode("", True)
        for demo in self.demos:
            ids += self.tok.encode(before + demo.text + after, False)
            ids += self.tok.encode(" " + demo.target + "\n\n", False)
        ids += self.tok.encode(before + ex.text + after, False)
        if len(ids) >= self.seq_len:
            raise UnsupportedError(f"seq_len = {self.seq_len} is too short for a {self.task.name} prompt of {len(ids)} "
                                   f"tokens{' with its demonstrations' if self.demos else ''}; raise seq_len")
        if not with_target:
            return Encoded(ids, [IGNORE] * len(ids))
        target = self.tok.encode(" " + ex.target, False) + ([self.tok.eos_id] if self.tok.eos_id is not None else [])
        target = target[: self.seq_len - len(ids)]  # a target longer than the room left is cut at its end
        return Encoded(ids + target, [IGNORE] * len(ids) + target)

    def prompt(self, ex: Example) -> list[int]:
        """What generation starts from: the prompt alone (a generative task)."""
        return self._generative(ex, with_target=False).input_ids

    def _causal(self, ex: Example, label: int) -> Encoded:
        if self.task.generative:
            return self._generative(ex)
        before, after = self.task.prompt.split("{text}")
        answer = self.tok.encode(" " + self.task.label_words[label], False)
        head = self.tok.encode("", True)
        # each demonstration is its prompt (within `budget`, template included) and its answer line
        demo_answers = [self.tok.encode(" " + self.task.label_words[d.label] + "\n\n", False) for d in self.demos]
        slots = len(self.demos) + 1
        budget = (self.seq_len - len(head) - len(answer) - sum(map(len, demo_answers))) // slots
        template = len(self.tok.encode(before, False)) + len(self.tok.encode(after, False))
        if budget <= template:
            what = f"{len(self.demos)} demonstration(s) and the query" if self.demos else "the query"
            raise UnsupportedError(f"seq_len = {self.seq_len} leaves no room for {what}: each prompt needs more "
                                   f"than its {template}-token template")
        pieces: list[int] = []
        for demo, demo_answer in zip(self.demos, demo_answers):
            pieces += self._prompt(demo.text, before, after, budget) + demo_answer
        pieces += self._prompt(ex.text, before, after, self.seq_len - len(head) - len(answer) - len(pieces))
        ids = head + pieces
        return Encoded(ids + answer, [IGNORE] * len(ids) + answer)

    def _prompt(self, text: str, before: str, after: str, budget: int) -> list[int]:
        pre, post = self.tok.encode(before, False), self.tok.encode(after, False)
        room = max(1, budget - len(pre) - len(post))
        return pre + self.tok.encode(text, False)[:room] + post

    def _encoder(self, ex: Example) -> Encoded:
        ids = self.tok.encode(ex.text, True)[: self.seq_len - len(self.tok.finish([]))]  # room for [SEP]
        return Encoded(self.tok.finish(ids), [ex.label])

    def encode(self, ex: Example, label: int | None = None) -> Encoded:
        if self.kind == "encoder":
            return self._encoder(ex)
        return self._causal(ex, ex.label if label is None else label)

    def collate(self, rows: list[Encoded], device: "torch.device",
                padding: str = "max_length") -> dict[str, "torch.Tensor"]:
        """Rows as tensors: padded to seq_len (`max_length`), to the batch's longest row (`longest`),
        or packed end to end into one row with position ids restarting at each example (`packed`:
        no padding; transformers keeps the examples apart through the position ids)."""
        import torch

        if padding == "packed":
            return self._packed(rows, device)
        longest = max(len(r.input_ids) for r in rows)
        width = longest if padding == "longest" else max(self.seq_len, longest)
        ids = torch.full((len(rows), width), self.tok.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r.input_ids)] = torch.tensor(r.input_ids)
            mask[i, : len(r.input_ids)] = 1
        if self.kind == "encoder":
            labels = torch.tensor([r.labels[0] for r in rows])
        else:
            labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
            for i, r in enumerate(rows):
                labels[i, : len(r.labels)] = torch.tensor(r.labels)
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}

    def _packed(self, rows: list[Encoded], device: "torch.device") -> dict[str, "torch.Tensor"]:
        import torch

        if self.kind != "causal":
            raise UnsupportedError("packed batches need a causal LM")
        ids = [t for r in rows for t in r.input_ids]
        positions = [i for r in rows for i in range(len(r.input_ids))]
        # the first token of each example is never a target, so no loss crosses an example boundary
        labels = [IGNORE if i == 0 else t for r in rows for i, t in enumerate(r.labels)]
        batch = {"input_ids": torch.tensor([ids]), "position_ids": torch.tensor([positions]),
                 "labels": torch.tensor([labels])}
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}

    def train_batches(self, batch_size: int, count: int, seed: int, device: "torch.device",
                      padding: str = "max_length") -> Iterator[dict[str, "torch.Tensor"]]:
        """`count` batches drawn from the train split in a seeded order, cycling if needed."""
        order: list[Example] = []
        rng = random.Random(seed)
        while len(order) < batch_size * count:
            epoch = list(self.task.train)
            rng.shuffle(epoch)
            order += epoch
        for i in range(count):
            rows = [self.encode(ex) for ex in order[i * batch_size:(i + 1) * batch_size]]
            yield self.collate(rows, device, padding)


def left_pad(rows: list[list[int]], fill: int) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Rows in one tensor aligned at their last token, `fill` in front of the shorter ones, and the
    mask of their real tokens (scoring a label word and generation both go on from the last token)."""
    import torch

    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), fill, dtype=torch.long)
    mask = torch.zeros_like(out)
    for i, r in enumerate(rows):
        out[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return out, mask


def real_tokens(batch: dict[str, "torch.Tensor"]) -> int:
    """Tokens of a batch that are not padding."""
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())


def positions(batch: dict[str, "torch.Tensor"]) -> int:
    """Positions a batch computes on, padding included."""
    return int(batch["input_ids"].numel())
