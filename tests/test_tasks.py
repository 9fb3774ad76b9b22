from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench import tasks
from bench.config import TaskSpec
from bench.errors import ConfigError, UnsupportedError
from bench.tokenizer import ByteTokenizer


def test_mr_local_split_is_fixed_and_sized_like_the_hub(mr_dir: Path) -> None:
    task = tasks.load_task(TaskSpec("mr", {"data_dir": str(mr_dir)}))
    assert (len(task.train), len(task.test)) == (8530, 1066)
    assert not {e.text for e in task.train} & {e.text for e in task.test}
    again = tasks._mr_local(mr_dir)
    assert [e.text for e in again.test[:20]] == [e.text for e in task.test[:20]]
    assert 0.4 < sum(e.label for e in task.test) / len(task.test) < 0.6


def test_mr_missing_folder_is_a_clear_unsupported(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedError, match="rt-polarity.pos not found"):
        tasks.load_task(TaskSpec("mr", {"data_dir": str(tmp_path)}))


def test_task_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="unknown key 'data_dri'.*did you mean 'data_dir'"):
        tasks.parse_spec({"name": "mr", "data_dri": "x"}, "m.toml: tasks[0]")


def test_causal_rows_train_on_the_label_word_only() -> None:
    task = tasks.load_task(TaskSpec("synthetic", {}))
    b = tasks.Batcher(task, ByteTokenizer(), "causal", 48)
    enc = b.encode(task.train[0])
    answer = ByteTokenizer().encode(" " + task.label_words[task.train[0].label], False)
    assert enc.labels[-len(answer):] == answer
    assert set(enc.labels[:-len(answer)]) == {tasks.IGNORE}
    assert len(enc.input_ids) <= 48
    batch = b.collate([enc], torch.device("cpu"))
    assert batch["input_ids"].shape == (1, 48)


def test_encoder_rows_are_truncated_to_seq_len() -> None:
    task = tasks.load_task(TaskSpec("synthetic", {}))
    b = tasks.Batcher(task, ByteTokenizer(), "encoder", 16)
    batch = b.collate([b.encode(e) for e in task.train[:3]], torch.device("cpu"))
    assert batch["input_ids"].shape == (3, 16) and batch["labels"].tolist() == [e.label for e in task.train[:3]]


def test_train_batches_are_seeded() -> None:
    task = tasks.load_task(TaskSpec("synthetic", {}))
    b = tasks.Batcher(task, ByteTokenizer(), "encoder", 16)
    one = [x["input_ids"] for x in b.train_batches(4, 3, 7, torch.device("cpu"))]
    two = [x["input_ids"] for x in b.train_batches(4, 3, 7, torch.device("cpu"))]
    other = [x["input_ids"] for x in b.train_batches(4, 3, 8, torch.device("cpu"))]
    assert all(torch.equal(a, c) for a, c in zip(one, two))
    assert not all(torch.equal(a, c) for a, c in zip(one, other))
