from __future__ import annotations

from pathlib import Path

import pytest

from bench.config import Settings, builtin_matrices, load_matrix
from bench.errors import ConfigError

GOOD = """
name = "t"
models = ["tiny-llama"]
tasks = ["synthetic"]
seeds = [0, 1]
[defaults]
steps = 2
[[settings]]
batch_size = 2
[[settings]]
batch_size = 4
[[methods]]
method = "lora"
options = { r = 4 }
[[methods]]
name = "full-bf16"
method = "full"
settings = { precision = "bf16-mixed" }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "m.toml"
    path.write_text(text)
    return path


def test_good_matrix_expands_the_cross_product(tmp_path: Path) -> None:
    m = load_matrix(str(write(tmp_path, GOOD)))
    assert len(m.cells) == 1 * 2 * 1 * 2 * 2  # models x methods x tasks x settings x seeds
    assert {c.settings.batch_size for c in m.cells} == {2, 4}
    bf16 = [c for c in m.cells if c.method.name == "full-bf16"]
    assert all(c.settings.precision == "bf16-mixed" for c in bf16)
    assert len({c.cell_id for c in m.cells}) == len(m.cells)
    assert m.cells[0].method.options["r"] == 4 and m.cells[0].method.options["alpha"] == 16.0


def test_cell_id_is_stable_and_depends_on_config(tmp_path: Path) -> None:
    a = load_matrix(str(write(tmp_path, GOOD))).cells
    b = load_matrix(str(write(tmp_path, GOOD.replace("r = 4", "r = 8")))).cells
    assert a[0].cell_id != b[0].cell_id
    assert a[0].cell_id == load_matrix(str(write(tmp_path, GOOD))).cells[0].cell_id


@pytest.mark.parametrize("edit, expected", [
    (("seeds = [0, 1]", "seeds = [0, 1]\nmodles = 3"), ["m.toml", "'modles'", "did you mean 'models'"]),
    (('method = "lora"', 'method = "lora2"'), ["methods[0].method", "'lora2'", "did you mean 'lora'"]),
    (("r = 4", "r = 4, alpah = 2"), ["methods[0].options", "'alpah'", "did you mean 'alpha'"]),
    (("r = 4", 'r = "four"'), ["r = 'four'", "wrong type", "int"]),
    (('precision = "bf16-mixed"', 'precision = "fp16"'), ["precision = 'fp16'", "valid choices", "bf16-mixed"]),
    (('models = ["tiny-llama"]', 'models = ["tiny-lama"]'), ["models[0]", "'tiny-lama'", "did you mean 'tiny-llama'"]),
    (('tasks = ["synthetic"]', 'tasks = ["mrr"]'), ["tasks[0]", "'mrr'", "did you mean 'mr'"]),
    (("steps = 2", "steps = 0"), ["steps = 0", "positive"]),
    (("steps = 2", "stepz = 2"), ["'stepz'", "did you mean 'steps'"]),
    (("r = 4", "r = -1"), ["r = -1", "positive"]),
    (('name = "full-bf16"', 'name = "lora"'), ["'lora' is used twice"]),
])
def test_bad_matrices_name_file_key_value_and_choices(tmp_path: Path, edit: tuple[str, str],
                                                       expected: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        load_matrix(str(write(tmp_path, GOOD.replace(*edit, 1))))
    for part in expected:
        assert part in str(err.value), str(err.value)


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_matrix(str(write(tmp_path, "models = [")))
    with pytest.raises(ConfigError, match="does not exist"):
        load_matrix(str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="unknown matrix 'smok'.*did you mean 'smoke'"):
        load_matrix("smok")


def test_settings_reject_impossible_values() -> None:
    with pytest.raises(ConfigError, match="lr = 0"):
        Settings(lr=0)
    with pytest.raises(ConfigError, match="eval_examples = -1"):
        Settings(eval_examples=-1)


@pytest.mark.parametrize("name", builtin_matrices())
def test_builtin_matrices_validate(name: str) -> None:
    assert load_matrix(name).cells


def test_restrictions_pick_model_tasks_and_method_models(tmp_path: Path) -> None:
    text = """
models = [{ name = "tiny-llama", tasks = ["synthetic"] }, "tiny-bert"]
tasks = ["synthetic", "mr"]
[[methods]]
method = "full"
[[methods]]
method = "icl"
models = ["tiny-llama"]
"""
    cells = load_matrix(str(write(tmp_path, text))).cells
    names = sorted(c.name.rsplit("/", 2)[0] for c in cells)
    assert names == ["tiny-bert/full/mr", "tiny-bert/full/synthetic", "tiny-llama/full/synthetic",
                     "tiny-llama/icl/synthetic"]
    with pytest.raises(ConfigError, match=r"methods\[1\].models: 'tiny-lama' is not a model of this matrix"):
        load_matrix(str(write(tmp_path, text.replace('models = ["tiny-llama"]', 'models = ["tiny-lama"]'))))
