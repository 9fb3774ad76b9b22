"""Tasks: labelled text with a train, a validation and a test split, and a `data` dict saying where
the data came from and a hash of the splits (every record carries it as `task_data`).

Each task is a dataclass of its options, registered by name in its own module (synthetic.py,
mr.py); `load_task` builds the options and loads the splits once per process. Torch-free.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
from dataclasses import dataclass
from typing import Any

from bench import schema
from bench.errors import ConfigError, did_you_mean
from bench.registry import Registry, decorator
from bench.spec import TaskSpec

# The modules that register tasks, imported on first use (they import this one).
TASK_MODULES = ("bench.catalog.synthetic", "bench.catalog.mr", "bench.catalog.arith", "bench.catalog.gsm8k")


@dataclass(frozen=True)
class Example:
    text: str
    label: int = 0
    # a generative task's: what the model is trained to write after the prompt (a worked solution)
    # and the final answer its output is scored against by exact match
    target: str = ""
    answer: str = ""


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
    # what the task asks, in words (prompt tuning's default initialisation reads it)
    instruction: str = "Classify the sentiment of this text as positive or negative."
    # scored by generation (greedy decoding, the answer extracted and matched exactly) instead of
    # by the likelier label word; trained on the target after the prompt, the prompt masked
    generative: bool = False

    def test_subset(self, n: int | None) -> list[Example]:
        return self.test if n is None else self.test[:n]

    def validation_subset(self, n: int) -> list[Example]:
        return self.validation[:n]


TASKS: Registry[type] = Registry("task")
register_task = decorator(TASKS)


def registry() -> Registry[type]:
    """Every task, its module imported."""
    for module in TASK_MODULES:
        importlib.import_module(module)
    return TASKS


def parse_spec(value: Any, where: str) -> TaskSpec:
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise ConfigError(f"{where}: expected a task name or a table with 'name', got {value!r}")
    name = value["name"]
    if name not in registry():
        raise ConfigError(f"{where}: unknown task {name!r}{did_you_mean(name, TASKS)}")
    options = {k: v for k, v in value.items() if k != "name"}
    schema.build(TASKS.get(name), options, f"{where} ({name})")
    return TaskSpec(name, options)


def load_task(spec: TaskSpec) -> Task:
    options = schema.build(registry().get(spec.name), spec.options, f"task {spec.name}")
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
        for ex in rows:  # a generative example adds its target and answer (classification hashes stay)
            extra = f"\t{ex.target}\t{ex.answer}" if ex.target or ex.answer else ""
            h.update(f"{ex.label}\t{ex.text}{extra}\n".encode("utf-8"))
    return h.hexdigest()


def _provenance(splits: tuple[list[Example], list[Example], list[Example]], source: str,
                data: dict[str, Any]) -> dict[str, Any]:
    train, validation, test = splits
    return {"source": source, "split_sha256": split_sha256(train, validation, test),
            "sizes": {"train": len(train), "validation": len(validation), "test": len(test)}, **data}


def make_task(name: str, splits: tuple[list[Example], list[Example], list[Example]], natural_text: bool,
              source: str, instruction: str, **data: Any) -> Task:
    return Task(name, ["negative", "positive"], *splits, natural_text, _provenance(splits, source, data),
                instruction=instruction)


def make_generative_task(name: str, splits: tuple[list[Example], list[Example], list[Example]], source: str,
                         instruction: str, prompt: str, **data: Any) -> Task:
    """A task scored by generation: natural text, no label words."""
    return Task(name, [], *splits, True, _provenance(splits, source, data), prompt=prompt, instruction=instruction,
                generative=True)
