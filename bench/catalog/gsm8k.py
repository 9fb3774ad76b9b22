"""`gsm8k`: grade-school math word problems (Cobbe et al., 2021) from the hub, scored by generation:
exact match on the final number. Training on GSM8K's own train split, or on MetaMathQA (Yu et al.,
2023), as peft's method comparison does. The dataset id, configuration and the commit actually
loaded (the revision asked for resolved, or the cached copy's offline) are in the record; without
the hub or a cached copy the cell is `unsupported` with the reason (use `arith` offline)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from bench.catalog.tasks import Example, Task, make_generative_task, register_task
from bench.errors import UnsupportedError, require

GSM8K = ("openai/gsm8k", "main")
METAMATHQA = "meta-math/MetaMathQA"
COMMIT = re.compile(r"[0-9a-f]{40}")
PROMPT = "Question: {text}\nAnswer:"
INSTRUCTION = "Solve the math word problem step by step and give the final number."
_CALC = re.compile(r"<<[^>]*>>")  # GSM8K's calculator annotations


def gsm8k_example(question: str, solution: str) -> Example:
    """GSM8K's solution ends with '#### N': the reasoning becomes the target, N the answer."""
    work, _, final = solution.rpartition("####")
    answer = final.strip().replace(",", "")
    text = " ".join(_CALC.sub("", work).split())
    return Example(" ".join(question.split()), 0, target=f"{text} The answer is {answer}.", answer=answer)


def hub_load(datasets: Any, path: str, name: str | None = None, revision: str | None = None,
             split: str | None = None) -> tuple[Any, str | None]:
    """(the dataset, the commit it was loaded at). As `datasets.load_dataset`, through its builder,
    whose hash is the commit the hub resolved the revision to (offline: the cached copy's commit).
    A commit asked for that is not the one loaded (a cached copy of another, offline) is an error."""
    builder = datasets.load_dataset_builder(path, name, revision=revision)
    builder.download_and_prepare()
    commit = getattr(builder, "hash", None)
    commit = commit if isinstance(commit, str) and COMMIT.fullmatch(commit) else None
    if revision is not None and COMMIT.fullmatch(revision) and commit != revision:
        raise UnsupportedError(f"{path}: revision {revision} was asked for, but the copy loaded is at "
                               f"{commit or 'an unknown commit'} (offline, a cached copy of another revision)")
    return builder.as_dataset(split=split), commit


def metamath_example(query: str, response: str) -> Example | None:
    """MetaMathQA's response ends with 'The answer is: X'; rows without a numeric answer are skipped."""
    work, sep, final = response.rpartition("The answer is:")
    answer = final.strip().rstrip(".").replace(",", "")
    if not sep or not re.fullmatch(r"-?\d+(\.\d+)?", answer):
        return None
    return Example(" ".join(query.split()), 0, target=f"{' '.join(work.split())} The answer is {answer}.",
                   answer=answer)


@register_task("gsm8k")
@dataclass(frozen=True)
class Gsm8kOptions:
    """GSM8K from the hub: its test split (1,319 problems) for scoring; for training its train split
    (7,473, less `validation_size` held out for validation) or MetaMathQA (`train = 'metamathqa'`,
    its first `train_size` rows with a numeric answer)."""

    train: Literal["gsm8k", "metamathqa"] = "gsm8k"
    train_size: int | None = None  # None: all of GSM8K's train split; MetaMathQA: 20,000
    validation_size: int = 200
    revision: str | None = None  # the hub revision (a commit, tag or branch); None: the default branch

    def __post_init__(self) -> None:
        require(self.train_size is None or self.train_size > 0, "train_size", self.train_size, "must be > 0")
        require(self.validation_size > 0, "validation_size", self.validation_size, "must be > 0")

    def load(self) -> Task:
        try:
            import datasets
        except ImportError:
            raise UnsupportedError("gsm8k needs the 'datasets' package and the hub: pip install '.[hub]'; "
                                   "offline, use the task 'arith'") from None
        try:
            ds, commit = hub_load(datasets, *GSM8K, revision=self.revision)
            extra, extra_commit = (hub_load(datasets, METAMATHQA, split="train") if self.train == "metamathqa"
                                   else (None, None))
        except UnsupportedError:
            raise
        except Exception as exc:  # noqa: BLE001 - offline, or the hub unreachable: a reason, not a crash
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            raise UnsupportedError(f"gsm8k: the hub dataset {GSM8K[0]!r} could not be loaded ({first}); "
                                   "offline, use the task 'arith' (generated, no download)") from None
        rows = [gsm8k_example(r["question"], r["answer"]) for r in ds["train"]]
        validation, train = rows[:self.validation_size], rows[self.validation_size:]
        if extra is not None:
            limit = self.train_size or 20_000
            train = []
            for r in extra:
                ex = metamath_example(r["query"], r["response"])
                if ex is not None:
                    train.append(ex)
                if len(train) >= limit:
                    break
        elif self.train_size:
            train = train[:self.train_size]
        test = [gsm8k_example(r["question"], r["answer"]) for r in ds["test"]]
        version = getattr(getattr(ds["test"], "info", None), "version", None)
        return make_generative_task("gsm8k", (train, validation, test), f"hub:{GSM8K[0]}/{GSM8K[1]}", INSTRUCTION,
                                    PROMPT, hub_revision=commit, hub_revision_requested=self.revision,
                                    hub_version=str(version),
                                    train_source=METAMATHQA if extra is not None else f"{GSM8K[0]} train",
                                    train_revision=extra_commit)
