"""Batches: examples turned into fixed-shape tensors for either head.

Encoders classify with a sequence-classification head. Causal LMs read a prompt and are trained
and scored on the label word that follows it (log-likelihood of each label's continuation).
A row longer than seq_len is cut at the end of its text (a generative row: of its target), never
silently: the Batcher counts the rows it cut, training's and evaluation's apart, for the record.
In-context learning's demonstrations go in whole, never cut. torch is imported inside the
functions that build tensors.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

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
    cut: bool = False  # longer than seq_len: its end was cut (a classification text, a generative target)


@dataclass
class Batcher:
    """Turns examples into fixed-shape tensors (padded to seq_len) for one model kind, and counts the
    rows it cut to seq_len (`rows_cut`). Demonstrations (in-context learning) go in whole: the
    Batcher keeps the first of them that fit beside the longest query of the test and validation
    splits that fits alone (`fit_demonstrations`), so every such prompt holds the same ones, whatever
    the cell scores."""

    task: Task = field(repr=False)
    tok: "Tokenizer" = field(repr=False)
    kind: str  # "causal" | "encoder"
    seq_len: int
    demos: list[Example] = field(default_factory=list)
    shots_asked: int = field(default=0, init=False)  # the demonstrations given, before fitting
    _train_rows: int = field(default=0, init=False, repr=False)
    _train_cut: int = field(default=0, init=False, repr=False)
    # evaluation rows by id(example): the example (kept, so its id is never reused) and whether it was cut
    _scored: dict[int, tuple[Example, bool]] = field(default_factory=dict, init=False, repr=False)
    # the demonstrations' tokens, and the demonstrations they are of
    _pieces: tuple[tuple[Example, ...], list[list[int]]] = field(default_factory=lambda: ((), []), init=False,
                                                                 repr=False)

    def __post_init__(self) -> None:
        self.shots_asked = len(self.demos)
        if self.demos:
            self.fit_demonstrations(self.task.test + self.task.validation)

    def _ids(self, text: str) -> list[int]:
        return self.tok.encode(text, False)

    def _template(self) -> tuple[list[int], list[int]]:
        """A classification prompt's tokens before and after its text (tokenized apart from it)."""
        before, after = self.task.prompt.split("{text}")
        return self._ids(before), self._ids(after)

    def _answers(self) -> list[list[int]]:
        return [self._ids(" " + word) for word in self.task.label_words]

    def _demo_pieces(self) -> list[list[int]]:
        """Each demonstration, whole: its prompt and its answer (label word, or worked solution)."""
        if self._pieces[0] != tuple(self.demos):
            pieces = []
            for demo in self.demos:
                if self.task.generative:
                    prompt, answer = self._ids(self.task.prompt.replace("{text}", demo.text)), demo.target
                else:
                    pre, post = self._template()
                    prompt, answer = pre + self._ids(demo.text) + post, self.task.label_words[demo.label]
                pieces.append(prompt + self._ids(" " + answer + "\n\n"))
            self._pieces = (tuple(self.demos), pieces)
        return self._pieces[1]

    def _shots(self, query: int, room: int) -> int:
        """How many of the demonstrations, in order and whole, fit with a query of `query` tokens in
        `room` tokens (none beside a query too long even alone)."""
        used, n = query, 0
        for piece in self._demo_pieces():
            if used + len(piece) > room:
                break
            used, n = used + len(piece), n + 1
        return n

    def _fitting(self, ex: Example) -> int:
        """How many demonstrations go before `ex`."""
        return self._shots(*self._query(ex)) if self.demos else 0

    def _demo_ids(self, n: int) -> list[int]:
        return [t for piece in self._demo_pieces()[:n] for t in piece]

    def _query(self, ex: Example) -> tuple[int, int]:
        """What a causal row needs for `ex` whole, demonstrations apart, and the room it has: the
        start token, the prompt and the longest label word (classification), or the start token and
        the prompt, with a token left to write (generative)."""
        start = len(self.tok.encode("", True))
        if self.task.generative:
            return start + len(self._ids(self.task.prompt.replace("{text}", ex.text))), self.seq_len - 1
        fixed = start + sum(map(len, self._template())) + max(map(len, self._answers()))
        return fixed + len(self._ids(ex.text)), self.seq_len

    def _generative(self, ex: Example, with_target: bool = True) -> Encoded:
        """The prompt (after the demonstrations that fit, each with its worked target), then the
        target and an end-of-sequence token; the loss is on the target only. A prompt is never cut
        (the question would lose its end); a target longer than the room left is, and the row counts
        as cut."""
        query = self._ids(self.task.prompt.replace("{text}", ex.text))
        ids = self.tok.encode("", True) + self._demo_ids(self._fitting(ex)) + query
        if len(ids) >= self.seq_len:
            raise UnsupportedError(f"seq_len = {self.seq_len} is too short for a {self.task.name} prompt of {len(ids)} "
                                   "tokens; raise seq_len")
        if not with_target:
            return Encoded(ids, [IGNORE] * len(ids))
        target = self._ids(" " + ex.target) + ([self.tok.eos_id] if self.tok.eos_id is not None else [])
        room = self.seq_len - len(ids)
        return Encoded(ids + target[:room], [IGNORE] * len(ids) + target[:room], cut=len(target) > room)

    def prompt(self, ex: Example) -> list[int]:
        """What generation starts from: the prompt alone (a generative task); an evaluation row."""
        enc = self._generative(ex, with_target=False)
        self._scored_row(ex, enc.cut)
        return enc.input_ids

    def _causal(self, ex: Example, label: int) -> Encoded:
        """The demonstrations that fit whole beside the whole query, then the query and the label
        word. A query too long even alone has none and loses the end of its text (the same for every
        label: the room is the longest label word's), and the row counts as cut."""
        if self.task.generative:
            return self._generative(ex)
        (pre, post), answers = self._template(), self._answers()
        head = self.tok.encode("", True) + self._demo_ids(self._fitting(ex))
        fixed = len(head) + len(pre) + len(post) + max(map(len, answers))
        room = self.seq_len - fixed
        if room < 1:  # no demonstration then: they go first
            raise UnsupportedError(f"seq_len = {self.seq_len} leaves no room for the query: the start token, its "
                                   f"{len(pre) + len(post)}-token template and the label word take {fixed} tokens; "
                                   "raise seq_len")
        text = self._ids(ex.text)
        ids = head + pre + text[:room] + post
        return Encoded(ids + answers[label], [IGNORE] * len(ids) + answers[label], cut=len(text) > room)

    def _encoder(self, ex: Example) -> Encoded:
        ids = self.tok.encode(ex.text, True)
        room = self.seq_len - len(self.tok.finish([]))  # room for [SEP]
        return Encoded(self.tok.finish(ids[:room]), [ex.label], cut=len(ids) > room)

    def _encode(self, ex: Example, label: int | None = None) -> Encoded:
        if self.kind == "encoder":
            return self._encoder(ex)
        return self._causal(ex, ex.label if label is None else label)

    def encode(self, ex: Example, label: int | None = None) -> Encoded:
        """An evaluation row (training rows come from `train_batches`), counted once per example
        however many labels are scored after it."""
        enc = self._encode(ex, label)
        self._scored_row(ex, enc.cut)
        return enc

    def _scored_row(self, ex: Example, cut: bool) -> None:
        _, was_cut = self._scored.get(id(ex), (ex, False))
        self._scored[id(ex)] = (ex, was_cut or cut)

    def rows_cut(self) -> dict[str, Any]:
        """The record's `rows` block: rows encoded and rows cut to seq_len, training rows as drawn by
        `train_batches` (a row drawn twice counts twice), evaluation rows as distinct examples (scored
        before and after training: once), the validation split's apart; and a note saying so."""
        validation = {id(e) for e in self.task.validation}
        out: dict[str, Any] = {"train_rows": self._train_rows, "train_rows_cut": self._train_cut, "eval_rows": 0,
                               "eval_rows_cut": 0, "validation_rows": 0, "validation_rows_cut": 0}
        for key, (_, cut) in self._scored.items():
            use = "validation" if key in validation else "eval"
            out[f"{use}_rows"] += 1
            out[f"{use}_rows_cut"] += int(cut)
        lost = "its target (a prompt is never cut)" if self.task.generative else "its text"
        out["note"] = (f"a row longer than seq_len = {self.seq_len} is cut, losing the end of {lost}; training "
                       "rows are counted as drawn, evaluation and validation rows as distinct examples")
        if len(self.demos) < self.shots_asked:
            out["note"] += (f"; {len(self.demos)} of the {self.shots_asked} demonstrations fit whole beside the "
                            f"longest query of the test and validation splits that fits alone")
        return out

    def fit_demonstrations(self, examples: list[Example]) -> int:
        """Keep the first demonstrations, whole, that fit beside the longest of `examples` that fits
        seq_len alone, so that every such query is scored after the same ones; returns how many are
        kept. A query too long even alone is scored after none, cut (and counted); where no query
        fits alone, no demonstration is kept."""
        needs = [self._query(ex) for ex in examples]
        longest = max(((need, room) for need, room in needs if need <= room), default=None)
        self.demos = self.demos[:self._shots(*longest)] if longest else []
        return len(self.demos)

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
            rows = [self._encode(ex) for ex in order[i * batch_size:(i + 1) * batch_size]]
            self._train_rows += len(rows)
            self._train_cut += sum(r.cut for r in rows)
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
