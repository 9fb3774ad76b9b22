"""What a cell is (bench/spec.py): settings validated when made, a cell id that is the hash of the
cell's identity, and a JSON form that a cell process reads back whole."""
from __future__ import annotations

import dataclasses
import json

import pytest

from bench.errors import ConfigError
from bench.spec import Cell, Settings
from tests.helpers import cell


@pytest.mark.parametrize("field, value, message", [
    ("lr", 0, "lr = 0: must be > 0"),
    ("eval_examples", -1, "eval_examples = -1: must be >= 0 (0 turns evaluation off)"),
    ("batch_size", 0, "batch_size = 0: must be a positive integer"),
    ("warmup_steps", -1, "warmup_steps = -1: must be >= 0"),
    ("max_grad_norm", 0.0, "max_grad_norm = 0.0: must be > 0"),
    ("threads", 0, "threads = 0: must be a positive integer"),
])
def test_settings_reject_impossible_values(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings(**{field: value})
    assert str(err.value) == message


def test_a_cell_survives_its_json_form() -> None:
    c = cell("lora", options={"r": 2}, seed=3, precision="bf16-mixed")
    again = Cell.from_json(json.loads(json.dumps(c.to_json())))
    assert again == c and again.cell_id == c.cell_id


def test_the_cell_id_is_its_identity_and_nothing_else() -> None:
    c = cell("lora", options={"r": 2})
    assert c.cell_id == cell("lora", options={"r": 2}).cell_id and len(c.cell_id) == 16
    assert c.cell_id != cell("lora", options={"r": 4}).cell_id
    assert c.cell_id != cell("lora", options={"r": 2}, seed=1).cell_id
    assert c.cell_id != cell("lora", options={"r": 2}, steps=4).cell_id
    renamed = dataclasses.replace(c, method=dataclasses.replace(c.method, name="my-lora"))
    assert renamed.cell_id == c.cell_id and renamed.name != c.name  # a variant's name is a label
    assert c.name == "tiny-llama/lora/synthetic/b4x32/seed0"


@pytest.mark.parametrize("settings, field, words", [
    ({"nproc": 2}, "strategy", "choose 'ddp' or 'fsdp'"),
    ({"strategy": "ddp", "nproc": 0}, "nproc", "positive integer"),
    ({"strategy": "fsdp", "nnodes": 0}, "nnodes", "positive integer"),
    ({"strategy": "ddp", "nproc": 2, "fsdp_cpu_offload": True}, "fsdp_cpu_offload", "needs strategy = 'fsdp'"),
])
def test_multi_rank_settings_are_checked_before_anything_runs(settings: dict, field: str, words: str) -> None:
    from bench.errors import ConfigError

    with pytest.raises(ConfigError, match=field) as err:
        Settings(**settings)
    assert words in str(err.value)


def test_a_multi_rank_cell_says_its_ranks_in_its_name_and_keeps_old_ids_single() -> None:
    from tests.helpers import cell

    single, ranked = cell("lora"), cell("lora", strategy="fsdp", nproc=4, nnodes=2)
    assert ranked.settings.world_size == 8 and ranked.name.endswith("/fsdp8/seed0")
    assert "strategy" not in single.identity()["settings"]  # at its default: ids recorded before stay
    assert ranked.identity()["settings"]["strategy"] == "fsdp"
