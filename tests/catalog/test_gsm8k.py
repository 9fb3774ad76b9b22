"""GSM8K records the commit it loaded, not the revision asked for. The hub is a fake `datasets`
module: its builder's hash is what the real one resolves a revision to (a snapshot's commit)."""
from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from bench.catalog.gsm8k import GSM8K, METAMATHQA, Gsm8kOptions
from bench.errors import UnsupportedError
from bench.results.record import Record

HEAD = "0123456789abcdef0123456789abcdef01234567"  # what the fake hub resolves any revision to
CACHED = "fedcba9876543210fedcba9876543210fedcba98"
SOLUTION = "She has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"


class FakeBuilder:
    def __init__(self, path: str, commit: str) -> None:
        self.path, self.hash, self.prepared = path, commit, False

    def download_and_prepare(self) -> None:
        self.prepared = True

    def as_dataset(self, split: str | None = None) -> Any:
        assert self.prepared
        if self.path == METAMATHQA:
            return [{"query": f"q{i}", "response": "So.\nThe answer is: 5"} for i in range(8)]
        rows = [{"question": f"Question {i}?", "answer": SOLUTION} for i in range(12)]
        return {"train": rows, "test": rows[:4]}


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    asked: dict[str, Any] = {}

    def load_dataset_builder(path: str, name: str | None = None, revision: str | None = None) -> FakeBuilder:
        asked[path] = revision
        return FakeBuilder(path, asked.get("commit", HEAD))

    def load_dataset(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("loaded without knowing the commit")

    fake = types.ModuleType("datasets")
    fake.load_dataset_builder = load_dataset_builder  # type: ignore[attr-defined]
    fake.load_dataset = load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    return asked


def test_the_record_says_the_commit_loaded(hub: dict[str, Any]) -> None:
    task = Gsm8kOptions(validation_size=2).load()
    assert hub == {GSM8K[0]: None}  # the default branch asked for
    rec = Record()
    rec.task_data.set(**task.data)  # as the session does: every field declared
    assert rec.task_data.hub_revision == HEAD and rec.task_data.hub_revision_requested is None
    assert rec.task_data.train_revision is None and task.data["sizes"] == {"train": 10, "validation": 2, "test": 4}
    assert Record.from_json(rec.to_json()).task_data.hub_revision == HEAD


def test_a_tag_is_resolved_and_metamathqa_has_its_own_commit(hub: dict[str, Any]) -> None:
    data = Gsm8kOptions(train="metamathqa", train_size=3, revision="v1.0").load().data
    assert hub == {GSM8K[0]: "v1.0", METAMATHQA: None}
    assert (data["hub_revision"], data["hub_revision_requested"]) == (HEAD, "v1.0")
    assert data["train_source"] == METAMATHQA and data["train_revision"] == HEAD and data["sizes"]["train"] == 3


def test_a_commit_asked_for_that_is_not_the_one_loaded_is_unsupported(hub: dict[str, Any]) -> None:
    hub["commit"] = CACHED  # offline, datasets falls back to the newest cached copy
    with pytest.raises(UnsupportedError, match=f"revision {HEAD} was asked for.*{CACHED}"):
        Gsm8kOptions(revision=HEAD).load()
    assert Gsm8kOptions(revision=CACHED).load().data["hub_revision"] == CACHED
