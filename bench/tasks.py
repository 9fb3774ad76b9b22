"""Tasks: labelled text, turned into fixed-shape batches for either head, and evaluation.

Encoders classify with a sequence-classification head. Causal LMs read a prompt and are trained
and scored on the label word that follows it (log-likelihood of each label's continuation).
Each task has a train, a validation and a test split, and a `data` dict saying where the data came
from and a hash of the splits (every record carries it as `task_data`).
Nothing here imports torch at module level.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import random
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Literal, get_args

from bench import schema
from bench.config import TaskSpec
from bench.errors import BenchError, ConfigError, UnsupportedError, did_you_mean
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
    validation: list[Example]
    test: list[Example]
    natural_text: bool  # False for synthetic data: accuracy is meaningful even on random weights
    # provenance: source, split_sha256, sizes, and files_sha256 where there are files
    data: dict[str, Any]
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


# ---- provenance -------------------------------------------------------------------------------

def text_sha256(text: str) -> str:
    """The ordering key of a sentence: sha256 of its UTF-8 bytes, in hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split_sha256(train: list[Example], validation: list[Example], test: list[Example]) -> str:
    """One hash of the three splits in order, so two machines can compare their data.

    sha256 over, for the splits train, validation, test in that order: the line
    "<split> <size>\\n", then one line "<label>\\t<text>\\n" per example, all in UTF-8.
    """
    h = hashlib.sha256()
    for name, rows in (("train", train), ("validation", validation), ("test", test)):
        h.update(f"{name} {len(rows)}\n".encode())
        for ex in rows:
            h.update(f"{ex.label}\t{ex.text}\n".encode("utf-8"))
    return h.hexdigest()


def _make_task(name: str, splits: tuple[list[Example], list[Example], list[Example]], natural_text: bool,
               source: str, **data: Any) -> Task:
    train, validation, test = splits
    provenance = {"source": source, "split_sha256": split_sha256(train, validation, test),
                  "sizes": {"train": len(train), "validation": len(validation), "test": len(test)}, **data}
    return Task(name, ["negative", "positive"], train, validation, test, natural_text, provenance)


# ---- the tasks ------------------------------------------------------------------------------

_POS = "good great fine nice happy best love fun superb bright".split()
_NEG = "bad poor awful sad worst hate dull boring weak grim".split()
_FILL = "the a movie film plot actor scene story was is and of".split()


@register_task("synthetic")
@dataclass(frozen=True)
class SyntheticOptions:
    """Generated sentences: sentiment words of one class between neutral words. No files needed.

    One generator with seed 1234 makes train, then test, then validation (in that order, so the
    train and test sentences are those of earlier versions that had no validation split).
    """

    train_size: int = 2000
    test_size: int = 256
    validation_size: int = 256
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

        train, test = make(self.train_size), make(self.test_size)
        validation = make(self.validation_size)
        return _make_task("synthetic", (train, validation, test), False, "generated:seed 1234")


# Pang & Lee's sentence polarity dataset v1.0, shipped gzipped in bench/data/mr (see its README.md).
MR_FILES = {"rt-polarity.neg": 0, "rt-polarity.pos": 1}  # file -> label
MR_SHA256 = {"rt-polarity.neg": "4ace77d558c3714723843f1d65b60c01e3417b208180f0728808d76ad0eeeaca",
             "rt-polarity.pos": "2da124ec187a9d5a29c9f04e91c540e02baed5af8868f550a26bd6fd4dbf8bf0"}
MR_PACKAGED = "data/mr"  # inside the bench package
MR_HUB_ID = "cornell-movie-review-data/rotten_tomatoes"
MrSource = Literal["packaged", "hub", "dir"]
MR_SOURCES = get_args(MrSource)


@register_task("mr")
@dataclass(frozen=True)
class MovieReviewOptions:
    """Movie-review sentence polarity (Pang & Lee 2005): 5,331 positive and 5,331 negative sentences.

    source = "packaged" (default): the copy shipped in bench/data/mr, no network needed.
    source = "dir": rt-polarity.pos and rt-polarity.neg in `data_dir` (another version is allowed;
    its checksums are recorded). Both go through one fixed split: within each class, sentences in
    order of (sha256 of the sentence, line number); the first tenth (rounded down) is test, the
    next tenth validation, the rest train (8,530 / 1,066 / 1,066, balanced); each split is then
    ordered by (sha256 of the sentence, label), so classes are mixed and the first eval_examples
    test sentences are a fair subset.
    source = "hub": the hub dataset `hub_id` with its own splits, each ordered the same way.
    """

    source: MrSource = "packaged"
    data_dir: str | None = None
    hub_id: str = MR_HUB_ID

    def __post_init__(self) -> None:
        choices = ", ".join(repr(s) for s in MR_SOURCES)
        if self.source == "dir":
            schema.require(self.data_dir is not None, "data_dir", self.data_dir,
                           "required with source = 'dir' (a folder holding rt-polarity.pos and rt-polarity.neg)")
        schema.require(self.data_dir is None or self.source == "dir", "data_dir", self.data_dir,
                       f"is used only with source = 'dir', but source = {self.source!r} "
                       f"(valid choices for source: {choices})")
        schema.require(self.hub_id == MR_HUB_ID or self.source == "hub", "hub_id", self.hub_id,
                       f"is used only with source = 'hub', but source = {self.source!r} "
                       f"(valid choices for source: {choices})")

    def load(self) -> Task:
        if self.source == "hub":
            return _mr_hub(self.hub_id)
        if self.source == "dir":
            return _mr_dir(Path(self.data_dir))
        return _mr_packaged()


def _mr_packaged() -> Task:
    files: dict[str, bytes] = {}
    for name in MR_FILES:
        where = f"bench/{MR_PACKAGED}/{name}.gz"
        try:
            raw = gzip.decompress(resources.files("bench").joinpath(f"{MR_PACKAGED}/{name}.gz").read_bytes())
        except (OSError, EOFError) as exc:
            raise BenchError(f"mr: cannot read the packaged {where} ({exc}): the installation is damaged; "
                             "reinstall ft-bench") from None
        digest = hashlib.sha256(raw).hexdigest()
        if digest != MR_SHA256[name]:
            raise BenchError(f"mr: the packaged {where} has sha256 {digest}, expected {MR_SHA256[name]}: "
                             "the installation is damaged; reinstall ft-bench")
        files[name] = raw
    return _mr_split(files, f"packaged:bench/{MR_PACKAGED}")


def _mr_dir(folder: Path) -> Task:
    files: dict[str, bytes] = {}
    for name in MR_FILES:
        path = folder / name
        if not path.is_file():
            raise UnsupportedError(f"mr: {path} not found (source = 'dir' needs data_dir to hold "
                                   f"{' and '.join(MR_FILES)})")
        files[name] = path.read_bytes()
    return _mr_split(files, f"dir:{folder.resolve()}")


def _mr_split(files: dict[str, bytes], source: str) -> Task:
    """Split rt-polarity files (latin-1, one sentence a line) as MovieReviewOptions describes."""
    train: list[tuple[str, int, int, str]] = []  # (sha256, label, line number, text)
    validation: list[tuple[str, int, int, str]] = []
    test: list[tuple[str, int, int, str]] = []
    for name, raw in files.items():
        label = MR_FILES[name]
        rows = sorted((text_sha256(text), label, number, text)
                      for number, line in enumerate(raw.decode("latin-1").split("\n"), 1)
                      if (text := line.strip()))
        if len(rows) < 10:
            raise UnsupportedError(f"mr: {name} has {len(rows)} sentences; the split needs at least 10 per class")
        tenth = len(rows) // 10
        test += rows[:tenth]
        validation += rows[tenth:2 * tenth]
        train += rows[2 * tenth:]
    splits = tuple([Example(text, label) for _, label, _, text in sorted(part)] for part in (train, validation, test))
    digests = {name: hashlib.sha256(raw).hexdigest() for name, raw in files.items()}
    return _make_task("mr", splits, True, source, files_sha256=digests,
                      files_match_published=digests == MR_SHA256)


def _mr_hub(hub_id: str) -> Task:
    try:
        import datasets
    except ImportError:
        raise UnsupportedError("mr: source = 'hub' needs the 'datasets' package: pip install '.[hub]', "
                               "or use source = 'packaged' (the default, no network)") from None
    try:
        ds = datasets.load_dataset(hub_id)
    except (OSError, ConnectionError, ValueError) as exc:  # offline, or the hub unreachable
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise UnsupportedError(f"mr: the hub dataset {hub_id!r} could not be loaded ({first}); offline, "
                               "use source = 'packaged' (the default) or source = 'dir'") from None

    def ordered(name: str) -> list[Example]:  # class-mixed, so eval_examples takes a fair subset
        rows = [Example(r["text"], int(r["label"])) for r in ds[name]]
        return sorted(rows, key=lambda ex: (text_sha256(ex.text), ex.label))

    return _make_task("mr", (ordered("train"), ordered("validation"), ordered("test")), True, f"hub:{hub_id}")


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
