"""Batches (bench/catalog/batches.py): causal rows train on the label word only, encoder rows are
truncated, fixed shapes, a seeded order."""
from __future__ import annotations

import pytest
import torch

from bench.catalog import tasks
from bench.catalog.batches import IGNORE, Batcher
from bench.catalog.tokenizer import ByteTokenizer
from bench.errors import UnsupportedError
from bench.spec import TaskSpec

CPU = torch.device("cpu")


def _task() -> tasks.Task:
    return tasks.load_task(TaskSpec("synthetic", {}))


def test_causal_rows_train_on_the_label_word_only() -> None:
    task = _task()
    b = Batcher(task, ByteTokenizer(), "causal", 48)
    enc = b.encode(task.train[0])
    answer = ByteTokenizer().encode(" " + task.label_words[task.train[0].label], False)
    assert enc.labels[-len(answer):] == answer
    assert set(enc.labels[:-len(answer)]) == {IGNORE}
    assert len(enc.input_ids) <= 48
    batch = b.collate([enc], CPU)
    assert batch["input_ids"].shape == (1, 48)
    # any label can be scored after the same prompt (evaluation scores each)
    other = b.encode(task.train[0], 1 - task.train[0].label)
    prompt = enc.labels.count(IGNORE)
    assert other.input_ids[:prompt] == enc.input_ids[:prompt] and other.labels[prompt:] != enc.labels[prompt:]


def test_encoder_rows_are_truncated_to_seq_len() -> None:
    task = _task()
    b = Batcher(task, ByteTokenizer(), "encoder", 16)
    batch = b.collate([b.encode(e) for e in task.train[:3]], CPU)
    assert batch["input_ids"].shape == (3, 16) and batch["labels"].tolist() == [e.label for e in task.train[:3]]


def test_encoder_rows_of_long_texts_fill_seq_len() -> None:
    task = _task()  # synthetic sentences are long enough to fill any seq_len
    b = Batcher(task, ByteTokenizer(), "encoder", 16)
    batch = b.collate([b.encode(e) for e in task.train[:3]], CPU)
    assert batch["attention_mask"].all()


def test_demonstrations_share_the_row_and_the_answer_stays_whole() -> None:
    task = _task()
    demos = task.train[1:3]
    b = Batcher(task, ByteTokenizer(), "causal", 128, demos)
    enc = b.encode(task.test[0])
    answer = ByteTokenizer().encode(" " + task.label_words[task.test[0].label], False)
    assert enc.labels[-len(answer):] == answer and set(enc.labels[:-len(answer)]) == {IGNORE}
    text = bytes(i - 3 for i in enc.input_ids[1:]).decode()
    assert text.count("Sentiment:") == 3  # two demonstrations and the question
    assert text.count("\n\n") == 2
    for demo in demos:
        assert f"Sentiment: {task.label_words[demo.label]}\n\n" in text


def test_rows_with_demonstrations_stay_within_seq_len() -> None:
    task = _task()
    b = Batcher(task, ByteTokenizer(), "causal", 192, task.train[:4])
    assert max(len(b.encode(ex).input_ids) for ex in task.test[:8]) <= 192


def test_train_batches_are_seeded() -> None:
    b = Batcher(_task(), ByteTokenizer(), "encoder", 16)
    one = [x["input_ids"] for x in b.train_batches(4, 3, 7, CPU)]
    two = [x["input_ids"] for x in b.train_batches(4, 3, 7, CPU)]
    other = [x["input_ids"] for x in b.train_batches(4, 3, 8, CPU)]
    assert len(one) == 3 and all(x.shape == (4, 16) for x in one)
    assert all(torch.equal(a, c) for a, c in zip(one, two))
    assert not all(torch.equal(a, c) for a, c in zip(one, other))


def test_train_batches_cycle_through_a_small_split() -> None:
    task = tasks.load_task(TaskSpec("synthetic", {"train_size": 3, "test_size": 1, "validation_size": 1}))
    b = Batcher(task, ByteTokenizer(), "encoder", 8)
    batches = list(b.train_batches(2, 4, 0, CPU))  # 8 rows from 3 examples
    assert len(batches) == 4 and all(x["input_ids"].shape == (2, 8) for x in batches)


def test_too_short_a_row_for_the_demonstrations_is_unsupported() -> None:
    task = _task()
    b = Batcher(task, ByteTokenizer(), "causal", 48, task.train[:4])
    with pytest.raises(UnsupportedError, match="seq_len = 48 leaves no room for 4 demonstration"):
        b.encode(task.test[0])


def test_too_short_a_row_for_the_template_alone_is_unsupported() -> None:
    task = _task()  # "Review: {text}\nSentiment:" is 19 bytes before any text
    with pytest.raises(UnsupportedError, match="seq_len = 16 leaves no room for the query: .*19-token template"):
        Batcher(task, ByteTokenizer(), "causal", 16).encode(task.test[0])
    assert len(Batcher(task, ByteTokenizer(), "causal", 32).encode(task.test[0]).input_ids) <= 32
