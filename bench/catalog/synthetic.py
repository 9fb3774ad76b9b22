"""The synthetic task: generated sentences, sentiment words of one class between neutral words.
No files, and learnable by tiny random models (accuracy means something even on random weights)."""
from __future__ import annotations

import random
from dataclasses import dataclass

from bench.catalog.tasks import Example, Task, make_task, register_task
from bench.errors import require

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
    min_words: int | None = None  # each sentence draws its length from [min_words, words]; None: all `words`

    def __post_init__(self) -> None:
        require(self.words > 0, "words", self.words, "must be a positive integer")
        require(self.min_words is None or 1 <= self.min_words <= self.words, "min_words", self.min_words,
                f"must be between 1 and words ({self.words})")

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
                n = self.words if self.min_words is None else rng.randint(self.min_words, self.words)
                out.append(Example(" ".join(words[:n]), label))
            return out

        train, test = make(self.train_size), make(self.test_size)
        validation = make(self.validation_size)
        return make_task("synthetic", (train, validation, test), False, "generated:seed 1234",
                         # its filler words are about films: the movie-review instruction fits it too
                         "Classify the sentiment of this movie review as positive or negative.")
