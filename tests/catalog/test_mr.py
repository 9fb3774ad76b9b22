"""The movie-review task (bench/catalog/mr.py): the packaged copy loads offline and checks its own
sums; one fixed split, the same from a folder; options that clash name the field."""
from __future__ import annotations

import gzip
import hashlib
import socket
from pathlib import Path

import pytest

import bench
from bench.catalog import mr, tasks
from bench.errors import BenchError, ConfigError, UnsupportedError
from bench.spec import TaskSpec

PACKAGED = Path(bench.__file__).parent / mr.MR_PACKAGED


# The split of the packaged movie-review files (bench/data/mr/README.md): a change to the files,
# the split rule or the order changes this hash, and every mr result with it.
MR_SPLIT_SHA256 = "75132a345e398c2480b3da28a85d1b539849e7fe02c6c252376020e2f863bfbd"


def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No hub, and any socket connection fails."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_packaged_mr_loads_with_no_network_and_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    _offline(monkeypatch)
    tasks._load.cache_clear()
    task = tasks.load_task(TaskSpec("mr", {}))
    assert task.data["source"] == "packaged:bench/data/mr"
    assert task.data["files_sha256"] == mr.MR_SHA256 and task.data["files_match_published"]
    assert task.natural_text and task.label_words == ["negative", "positive"]
    assert task.instruction == mr.INSTRUCTION


def test_a_packaged_file_that_fails_its_checksum_is_a_damaged_installation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(mr.MR_SHA256, "rt-polarity.pos", "0" * 64)
    with pytest.raises(BenchError, match=r"packaged bench/data/mr/rt-polarity\.pos\.gz has sha256 2da124.*damaged"):
        mr._mr_packaged()


def test_mr_split_is_sized_like_the_hub_balanced_and_disjoint() -> None:
    task = tasks.load_task(TaskSpec("mr", {}))
    splits = {"train": task.train, "validation": task.validation, "test": task.test}
    assert {k: len(v) for k, v in splits.items()} == {"train": 8530, "validation": 1066, "test": 1066}
    assert task.data["sizes"] == {k: len(v) for k, v in splits.items()}
    assert {k: sum(e.label for e in v) for k, v in splits.items()} == {"train": 4265, "validation": 533, "test": 533}
    texts = [{e.text for e in v} for v in splits.values()]
    assert sum(map(len, texts)) == 10662 == len(set().union(*texts))  # no sentence in two splits
    # evaluation takes the first eval_examples test sentences: both classes must be there
    assert 0.4 < sum(e.label for e in task.test[:150]) / 150 < 0.6


def test_mr_split_hash_is_a_fixed_constant() -> None:
    task = tasks.load_task(TaskSpec("mr", {}))
    assert task.data["split_sha256"] == MR_SPLIT_SHA256
    assert tasks.split_sha256(task.train, task.validation, task.test) == MR_SPLIT_SHA256


def test_mr_dir_uses_the_same_split_and_records_other_checksums(tmp_path: Path) -> None:
    same = tmp_path / "same"
    same.mkdir()
    for name in mr.MR_FILES:
        (same / name).write_bytes(gzip.decompress((PACKAGED / f"{name}.gz").read_bytes()))
    task = tasks.load_task(TaskSpec("mr", {"source": "dir", "data_dir": str(same)}))
    assert task.data["split_sha256"] == MR_SPLIT_SHA256 and task.data["files_match_published"]
    assert task.data["source"] == f"dir:{same.resolve()}"

    other = tmp_path / "other"
    other.mkdir()
    for name, word in (("rt-polarity.pos", "caf\xe9 good"), ("rt-polarity.neg", "bad")):
        (other / name).write_bytes("".join(f"{word} {i} . \n" for i in range(25)).encode("latin-1"))
    task = tasks.load_task(TaskSpec("mr", {"source": "dir", "data_dir": str(other)}))
    assert task.data["sizes"] == {"train": 42, "validation": 4, "test": 4}
    assert [sum(e.label for e in v) for v in (task.train, task.validation, task.test)] == [21, 2, 2]
    assert "caf\xe9 good 0 ." in {e.text for e in task.train + task.validation + task.test}
    assert task.data["files_sha256"] == {n: hashlib.sha256((other / n).read_bytes()).hexdigest()
                                         for n in mr.MR_FILES}
    assert not task.data["files_match_published"] and task.data["split_sha256"] != MR_SPLIT_SHA256


def test_mr_missing_folder_is_a_clear_unsupported(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedError, match=r"rt-polarity\.(neg|pos) not found"):
        tasks.load_task(TaskSpec("mr", {"source": "dir", "data_dir": str(tmp_path)}))


def test_mr_too_few_sentences_is_unsupported(tmp_path: Path) -> None:
    for name in mr.MR_FILES:
        (tmp_path / name).write_bytes(b"one\ntwo\n")
    with pytest.raises(UnsupportedError, match="has 2 sentences; the split needs at least 10 per class"):
        tasks.load_task(TaskSpec("mr", {"source": "dir", "data_dir": str(tmp_path)}))


@pytest.mark.parametrize(("options", "message"), [
    ({"source": "dir"}, r"data_dir = None: required with source = 'dir'"),
    ({"data_dir": "/d"}, r"data_dir = '/d': is used only with source = 'dir', but source = 'packaged' "
                         r"\(valid choices for source: 'packaged', 'hub', 'dir'\)"),
    ({"source": "hub", "data_dir": "/d"}, r"data_dir = '/d': .*but source = 'hub'"),
    ({"hub_id": "me/mr"}, r"hub_id = 'me/mr': is used only with source = 'hub'.*valid choices for source"),
    ({"source": "web"}, r"source = 'web' is not valid; valid choices: dir, hub, packaged"),
])
def test_bad_mr_options_name_the_field(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=r"m\.toml: tasks\[0\] \(mr\): " + message):
        tasks.parse_spec({"name": "mr", **options}, "m.toml: tasks[0]")


def test_mr_hub_offline_is_unsupported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _offline(monkeypatch)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    import datasets  # in the lock (the `hub` extra); imported here, so collection needs no datasets
    # the variables are read when datasets is imported: set them again in case it already was
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    with pytest.raises(UnsupportedError, match="could not be loaded.*source = 'packaged'"):
        tasks.load_task(TaskSpec("mr", {"source": "hub"}))
