"""`arith`: multi-step arithmetic word problems generated from a seed, with a worked solution as the
training target and the final number as the answer. No files and no network: a fresh machine can
measure accuracy by generation, and training visibly moves it.

    Question: Mia has 7 pears. She buys 5 more pears. Then she gives 3 pears to a friend. How many
    pears does Mia have now?
    Answer: 7 + 5 = 12. 12 - 3 = 9. The answer is 9.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from bench.catalog.tasks import Example, Task, make_generative_task, register_task
from bench.errors import require

_NAMES = [("Mia", "She", "her"), ("Tom", "He", "his"), ("Ana", "She", "her"), ("Leo", "He", "his"),
          ("Zoe", "She", "her"), ("Sam", "He", "his"), ("Ivy", "She", "her"), ("Max", "He", "his")]
_ITEMS = "apples pears books coins stamps marbles shells cards pencils stickers".split()
PROMPT = "Question: {text}\nAnswer:"
INSTRUCTION = "Solve the arithmetic word problem step by step and give the final number."


def problem(rng: random.Random, steps: int, max_number: int) -> Example:
    """One problem of `steps` operations on numbers up to `max_number` (results stay >= 0)."""
    name, she, _ = rng.choice(_NAMES)
    item = rng.choice(_ITEMS)
    value = rng.randint(2, max_number)
    sentences = [f"{name} has {value} {item}."]
    work = []
    for i in range(steps):
        then = "Then " if i else ""
        subject = she.lower() if then else she
        op = rng.choice(["+", "-", "*"] if value <= max_number else ["+", "-"])
        if op == "-" and value < 2:
            op = "+"
        if op == "+":
            k = rng.randint(1, max_number)
            sentences.append(f"{then}{subject} buys {k} more {item}.")
            new = value + k
        elif op == "-":
            k = rng.randint(1, value - 1)
            sentences.append(f"{then}{subject} gives {k} {item} to a friend.")
            new = value - k
        else:
            k = rng.randint(2, 3)
            sentences.append(f"{then}{subject} {'doubles' if k == 2 else 'triples'} the number of {item}.")
            new = value * k
        work.append(f"{value} {op} {k} = {new}.")
        value = new
    sentences.append(f"How many {item} does {name} have now?")
    text = " ".join(sentences)
    return Example(text, 0, target=" ".join(work) + f" The answer is {value}.", answer=str(value))


@register_task("arith")
@dataclass(frozen=True)
class ArithOptions:
    """Arithmetic word problems from a seed: `steps` operations (+, -, x) on numbers up to
    `max_number`. Test, then validation, then train are drawn from one generator; no worked solution
    (and so no problem text) appears in two splits, texts are distinct within a split, and the test
    split does not depend on train_size (nor the validation split)."""

    steps: int = 2
    max_number: int = 20
    train_size: int = 2000
    validation_size: int = 200
    test_size: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        require(1 <= self.steps <= 6, "steps", self.steps, "must be between 1 and 6 (operations per problem)")
        require(self.max_number >= 3, "max_number", self.max_number, "must be >= 3")
        for name in ("train_size", "validation_size", "test_size"):
            require(getattr(self, name) > 0, name, getattr(self, name), "must be a positive integer")

    def load(self) -> Task:
        rng = random.Random(self.seed)
        taken: set[str] = set()  # the worked solutions of the splits drawn so far

        def draw(n: int, split: str) -> list[Example]:
            # a problem whose worked solution an earlier split holds is the same problem under another
            # name or item (a model trained on it has seen the test's answer): never in two splits
            out: list[Example] = []
            texts: set[str] = set()
            tries = 0
            while len(out) < n:
                tries += 1
                if tries > 50 * n + 1000:
                    raise ValueError(f"arith: fewer than {n} {split} problems with steps = {self.steps}, max_number = "
                                     f"{self.max_number} whose worked solution is in no earlier split; raise "
                                     "max_number or steps, or lower the split sizes")
                ex = problem(rng, self.steps, self.max_number)
                if ex.target not in taken and ex.text not in texts:
                    texts.add(ex.text)
                    out.append(ex)
            taken.update(ex.target for ex in out)
            return out

        test = draw(self.test_size, "test")
        validation = draw(self.validation_size, "validation")
        train = draw(self.train_size, "train")
        return make_generative_task("arith", (train, validation, test),
                                    f"generated:seed {self.seed}, steps {self.steps}, max_number {self.max_number}",
                                    INSTRUCTION, PROMPT)
