"""Tasks by name (bench/catalog/tasks.py) and the synthetic task (bench/catalog/synthetic.py)."""
from __future__ import annotations

import pytest

from bench.catalog import synthetic, tasks
from bench.errors import ConfigError
from bench.spec import TaskSpec


def test_the_registry_holds_every_task_module() -> None:
    assert list(tasks.registry()) == ["arith", "gsm8k", "mr", "synthetic"]
    with pytest.raises(ConfigError, match="m.toml: tasks\\[0\\]: unknown task 'synthetc'.*did you mean 'synthetic'"):
        tasks.parse_spec("synthetc", "m.toml: tasks[0]")
    with pytest.raises(ConfigError, match="expected a task name or a table with 'name'"):
        tasks.parse_spec({"source": "dir"}, "m.toml: tasks[0]")
    assert tasks.parse_spec({"name": "synthetic", "train_size": 10}, "w") == TaskSpec("synthetic", {"train_size": 10})


def test_synthetic_has_a_validation_split_and_provenance() -> None:
    task = tasks.load_task(TaskSpec("synthetic", {"train_size": 20, "test_size": 8, "validation_size": 6}))
    assert (len(task.train), len(task.validation), len(task.test)) == (20, 6, 8)
    assert task.data["source"] == "generated:seed 1234"
    assert task.data["sizes"] == {"train": 20, "validation": 6, "test": 8}
    assert not task.natural_text
    again = synthetic.SyntheticOptions(train_size=20, test_size=8, validation_size=6).load()
    assert again.data["split_sha256"] == task.data["split_sha256"]
    assert [e.text for e in again.train] == [e.text for e in task.train]  # the same sentences every time


def test_synthetic_train_and_test_do_not_depend_on_the_validation_size() -> None:
    small = synthetic.SyntheticOptions(train_size=20, test_size=8, validation_size=1).load()
    large = synthetic.SyntheticOptions(train_size=20, test_size=8, validation_size=50).load()
    assert [e.text for e in small.train + small.test] == [e.text for e in large.train + large.test]


def test_task_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="unknown key 'data_dri'.*did you mean 'data_dir'"):
        tasks.parse_spec({"name": "mr", "data_dri": "x"}, "m.toml: tasks[0]")
    with pytest.raises(ConfigError, match="train_size = 'many' has the wrong type; expected int"):
        tasks.parse_spec({"name": "synthetic", "train_size": "many"}, "m.toml: tasks[0]")


def test_split_sha256_covers_sizes_labels_and_text() -> None:
    a = [tasks.Example("good film", 1)]
    b = [tasks.Example("bad film", 0)]
    base = tasks.split_sha256(a, b, [])
    assert base != tasks.split_sha256(b, a, [])  # which split a sentence is in
    assert base != tasks.split_sha256([tasks.Example("good film", 0)], b, [])  # its label
    assert base != tasks.split_sha256(a, [], b)


def test_test_subset_takes_the_first_examples() -> None:
    task = tasks.load_task(TaskSpec("synthetic", {"train_size": 4, "test_size": 8, "validation_size": 2}))
    assert task.test_subset(None) == task.test and task.test_subset(3) == task.test[:3]
    assert task.test_subset(0) == []
