"""Tasks: labelled text, turned into fixed-shape batches for either head, and evaluation.

Encoders classify with a sequence-classification head. Causal LMs read a prompt and are trained
and scored on the label word that follows it (log-likelihood of each label's continuation).
Nothing here imports torch at module level.
"""
from __future__ import annotations

import functools
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from bench import schema
from bench.config import TaskSpec
from bench.errors import ConfigError, UnsupportedError, did_you_mean
from bench.registry import Registry, decorator

if TYPE_CHECKING:
    import torch

    from bench.tokenizer import Tokenizer

IGNORE = -100


@dataclass(frozen=True)
class Example:
    text: str
    label: int


@dataclass
class Task:
    name: str
    label_words: list[str]
    train: list[Example]
    test: list[Example]
    natural_text: bool  # False for synthetic data: accuracy is meaningful even on random weights
    source: str
    prompt: str = "Review: {text}\nSentiment:"

    def test_subset(self, n: int | None) -> list[Example]:
        return self.test if n is None else self.test[:n]


TASKS: Registry[type] = Registry("task")
register_task = decorator(TASKS)


def parse_spec(value: Any, where: str) -> TaskSpec:
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise ConfigError(f"{where}: expected a task name or a table with 'name', got {value!r}")
    name = value["name"]
    if name not in TASKS:
        raise ConfigError(f"{where}: unknown task {name!r}{did_you_mean(name, TASKS)}")
    options = {k: v for k, v in value.items() if k != "name"}
    schema.build(TASKS.get(name), options, f"{where} ({name})")
    return TaskSpec(name, options)


def load_task(spec: TaskSpec) -> Task:
    options = schema.build(TASKS.get(spec.name), spec.options, f"task {spec.name}")
    return _load(options)


@functools.lru_cache(maxsize=4)
def _load(options: Any) -> Task:
    return options.load()


# ---- the tasks ------------------------------------------------------------------------------

_POS = "good great fine nice happy best love fun superb bright".split()
_NEG = "bad poor awful sad worst hate dull boring weak grim".split()
_FILL = "the a movie film plot actor scene story was is and of".split()


@register_task("synthetic")
@dataclass(frozen=True)
class SyntheticOptions:
    """Generated sentences: sentiment words of one class between neutral words. No files needed."""

    train_size: int = 2000
    test_size: int = 256
    words: int = 512  # long enough to fill any seq_len, so every token is real

    def load(self) -> Task:
        rng = random.Random(1234)  # fixed: every cell sees the same data; the cell seed orders it

        def make(n: int) -> list[Example]:
            out = []
            half = (self.words + 1) // 2
            for _ in range(n):
                label = rng.randint(0, 1)
                words = [None] * (2 * half)
                words[0::2] = rng.choices(_POS if label else _NEG, k=half)
                words[1::2] = rng.choices(_FILL, k=half)
                out.append(Example(" ".join(words[: self.words]), label))
            return out

        return Task("synthetic", ["negative", "positive"], make(self.train_size), make(self.test_size),
                    natural_text=False, source="generated (seed 1234)")


MR_ENV = "BENCH_MR_DIR"


@register_task("mr")
@dataclass(frozen=True)
class MovieReviewOptions:
    """Movie-review sentence polarity: the hub's rotten_tomatoes, or a local rt-polarity folder.

    `data_dir` (or the BENCH_MR_DIR environment variable) names a folder holding rt-polarity.pos
    and rt-polarity.neg; it is split with a fixed seed into 8,530 train and 1,066 test sentences
    like the hub dataset (its 1,066 validation sentences are left out).
    """

    data_dir: str | None = None
    hub_id: str = "cornell-movie-review-data/rotten_tomatoes"

    def load(self) -> Task:
        folder = self.data_dir or os.environ.get(MR_ENV)
        if folder:
            return _mr_local(Path(folder))
        return _mr_hub(self.hub_id)


def _mr_local(folder: Path) -> Task:
    files = {1: folder / "rt-polarity.pos", 0: folder / "rt-polarity.neg"}
    for f in files.values():
        if not f.is_file():
            raise UnsupportedError(f"mr: {f} not found (data_dir / ${MR_ENV} must hold rt-polarity.pos and .neg)")
    rows = [Example(line.strip(), label) for label, f in sorted(files.items())
            for line in f.read_text(encoding="latin-1").split("\n") if line.strip()]
    random.Random(0).shuffle(rows)
    test, train = rows[:1066], rows[2132:]
    return Task("mr", ["negative", "positive"], train, test, natural_text=True, source=f"local:{folder}")


def _mr_hub(hub_id: str) -> Task:
    try:
        import datasets
    except ImportError:
        raise UnsupportedError(f"mr: no data_dir and no ${MR_ENV} set, and the 'datasets' package is missing "
                               "to load the hub copy: pip install '.[hub]' or point BENCH_MR_DIR at rt-polarity files") from None
    try:
        ds = datasets.load_dataset(hub_id)
    except (OSError, ConnectionError, ValueError) as exc:  # offline, or the hub unreachable
        raise UnsupportedError(f"mr: the hub dataset {hub_id!r} could not be loaded ({str(exc).splitlines()[0][:200]}); "
                               f"offline, point ${MR_ENV} or data_dir at a folder with rt-polarity.pos/.neg") from None
    train = [Example(r["text"], int(r["label"])) for r in ds["train"]]
    test = [Example(r["text"], int(r["label"])) for r in ds["test"]]
    random.Random(0).shuffle(test)  # a fixed, class-mixed order, so eval_examples takes a fair subset
    return Task("mr", ["negative", "positive"], train, test, natural_text=True, source=f"hub:{hub_id}")


# ---- batches ----------------------------------------------------------------------------------

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

    def _causal(self, ex: Example, label: int) -> Encoded:
        before, after = self.task.prompt.split("{text}")
        answer = self.tok.encode(" " + self.task.label_words[label], False)
        slots = len(self.demos) + 1
        head = self.tok.encode("", True)
        pieces: list[int] = []
        budget = max(1, (self.seq_len - len(head) - len(answer)) // slots)
        for demo in self.demos:
            pieces += self._prompt(demo.text, before, after, budget) + self.tok.encode(
                " " + self.task.label_words[demo.label] + "\n\n", False)
        pieces += self._prompt(ex.text, before, after, self.seq_len - len(head) - len(answer) - len(pieces))
        ids = head + pieces
        return Encoded(ids + answer, [IGNORE] * len(ids) + answer)

    def _prompt(self, text: str, before: str, after: str, budget: int) -> list[int]:
        pre, post = self.tok.encode(before, False), self.tok.encode(after, False)
        room = max(1, budget - len(pre) - len(post))
        return pre + self.tok.encode(text, False)[:room] + post

    def _encoder(self, ex: Example) -> Encoded:
        ids = self.tok.encode(ex.text, True)[: self.seq_len - 1]
        return Encoded(self.tok.finish(ids), [ex.label])

    def encode(self, ex: Example, label: int | None = None) -> Encoded:
        if self.kind == "encoder":
            return self._encoder(ex)
        return self._causal(ex, ex.label if label is None else label)

    def collate(self, rows: list[Encoded], device: "torch.device") -> dict[str, "torch.Tensor"]:
        import torch

        width = max(self.seq_len, max(len(r.input_ids) for r in rows))
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

    def train_batches(self, batch_size: int, count: int, seed: int,
                      device: "torch.device") -> Iterator[dict[str, "torch.Tensor"]]:
        """`count` batches drawn from the train split in a seeded order, cycling if needed."""
        order: list[Example] = []
        rng = random.Random(seed)
        while len(order) < batch_size * count:
            epoch = list(self.task.train)
            rng.shuffle(epoch)
            order += epoch
        for i in range(count):
            rows = [self.encode(ex) for ex in order[i * batch_size:(i + 1) * batch_size]]
            yield self.collate(rows, device)
