"""Matrix files (bench/config.py): TOML in, a validated cross product of cells out; every error
names the file, the key, the bad value and the choices."""
from __future__ import annotations

from pathlib import Path

import pytest

from bench.config import builtin_matrices, load_matrix
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


@pytest.mark.parametrize("name", builtin_matrices())
def test_builtin_matrices_validate(name: str) -> None:
    matrix = load_matrix(name)
    assert matrix.cells and matrix.name == name and matrix.jobs >= 1
    assert len({c.cell_id for c in matrix.cells}) == len(matrix.cells)


def test_a_matrix_cannot_name_arbitrary_python(tmp_path: Path) -> None:
    path = write(tmp_path, 'models = ["tiny-llama"]\ntasks = ["synthetic"]\n[[methods]]\nmethod = "os:system"\n')
    with pytest.raises(ConfigError, match="unknown method 'os:system'"):
        load_matrix(str(path))


def test_select_takes_a_glob_over_cell_or_variant_names(tmp_path: Path) -> None:
    m = load_matrix(str(write(tmp_path, GOOD)))
    assert m.select(None) == m.cells
    assert {c.method.name for c in m.select("full-bf16")} == {"full-bf16"}
    assert {c.settings.batch_size for c in m.select("*/b4x*")} == {4}
    assert m.select("nothing") == []
    assert {c.method.name for c in m.select(["full-bf16", "lo*"])} == {"full-bf16", "lora"}  # any of several


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


LADDER = """
name = "t"
models = ["tiny-llama"]
tasks = [{ name = "synthetic", words = 12, min_words = 2 }]
[[methods]]
method = "lora"
ladder = "recipe"
[[methods]]
method = "ia3"
[[methods]]
name = "lora+packed"
method = "lora"
settings = { padding = "packed", compile = "default" }
ladder = "recipe"
"""


def test_ladder_rows_are_rungs_in_file_order(tmp_path: Path) -> None:
    cells = load_matrix(str(write(tmp_path, LADDER))).cells
    assert [(c.method.name, c.method.ladder, c.method.rung) for c in cells] == [
        ("lora", "recipe", 0), ("ia3", None, None), ("lora+packed", "recipe", 1)]
    assert cells[2].settings.padding == "packed" and cells[2].settings.compile == "default"
    assert "ladder" not in cells[0].identity()  # a ladder is presentation, not part of the cell


@pytest.mark.parametrize(("old", "new", "message"), [
    ('ladder = "recipe"\n[[methods]]\nmethod = "ia3"', 'ladder = 3\n[[methods]]\nmethod = "ia3"',
     "methods\\[0\\].ladder = 3 must be a non-empty string"),
    ("min_words = 2", "min_words = 20", "min_words = 20: must be between 1 and words \\(12\\)"),
    ('padding = "packed"', 'padding = "packing"', "padding = 'packing' is not valid.*did you mean 'packed'"),
])
def test_bad_ladder_and_recipe_values_name_the_field(tmp_path: Path, old: str, new: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_matrix(str(write(tmp_path, LADDER.replace(old, new, 1))))


@pytest.mark.parametrize(("value", "stored"), [('"full"', True), ("true", True), ('"off"', False), ("2", 2)])
def test_activation_checkpointing_is_gradient_checkpointing_by_its_new_name(tmp_path: Path, value: str,
                                                                           stored: bool | int) -> None:
    def matrix(line: str) -> list:
        return load_matrix(str(write(tmp_path, GOOD.replace("steps = 2", f"steps = 2\n{line}")))).cells

    new = matrix(f"activation_checkpointing = {value}")
    old = matrix(f"gradient_checkpointing = {str(stored).lower()}")
    assert all(c.settings.gradient_checkpointing == stored for c in new)
    assert [c.cell_id for c in new] == [c.cell_id for c in old]  # the spelling is not identity


@pytest.mark.parametrize(("line", "message"), [
    ('activation_checkpointing = "some"', "activation_checkpointing = 'some' is not valid; valid choices: 'off'"),
    ("activation_checkpointing = 0", "activation_checkpointing = 0 is not valid"),
    ("activation_checkpointing = 2\ngradient_checkpointing = true", "are one setting; give only one"),
])
def test_bad_activation_checkpointing_names_the_choices(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_matrix(str(write(tmp_path, GOOD.replace("steps = 2", f"steps = 2\n{line}"))))


SWEEP = GOOD.replace('options = { r = 4 }', 'options = { r = 4 }\nsweep = { lr = [1e-4, 3e-4, 1e-3] }')


def test_a_sweep_expands_into_one_row_per_grid_point(tmp_path: Path) -> None:
    cells = load_matrix(str(write(tmp_path, SWEEP))).cells
    lora = [c for c in cells if c.method.method == "lora"]
    assert len(cells) == 1 * (3 + 1) * 1 * 2 * 2 and len(lora) == 3 * 2 * 2
    assert {c.method.name for c in lora} == {"lora@lr=0.0001", "lora@lr=0.0003", "lora@lr=0.001"}
    assert {c.settings.lr for c in lora} == {1e-4, 3e-4, 1e-3}
    assert {c.method.sweep for c in lora} == {"lora"} and lora[0].method.sweep_point == {"lr": 1e-4}
    assert "sweep" not in lora[0].identity()  # a point is the cell it would be as a plain row
    plain = load_matrix(str(write(tmp_path, GOOD.replace("r = 4 }", "r = 4 }\nsettings = { lr = 3e-4 }")))).cells
    assert {c.cell_id for c in plain if c.method.method == "lora"} <= {c.cell_id for c in lora}


def test_a_sweep_may_take_method_options_and_several_keys(tmp_path: Path) -> None:
    text = GOOD.replace('options = { r = 4 }', 'sweep = { r = [4, 8], lr = [1e-4, 1e-3] }')
    lora = [c for c in load_matrix(str(write(tmp_path, text))).cells if c.method.method == "lora"]
    names = list(dict.fromkeys(c.method.name for c in lora))
    assert names == ["lora@r=4,lr=0.0001", "lora@r=4,lr=0.001", "lora@r=8,lr=0.0001", "lora@r=8,lr=0.001"]
    assert {(c.method.options["r"], c.settings.lr) for c in lora} == {(4, 1e-4), (4, 1e-3), (8, 1e-4), (8, 1e-3)}


@pytest.mark.parametrize(("sweep", "message"), [
    ("{ lrr = [1e-4, 1e-3] }", "'lrr' is neither a setting nor an option of lora.*did you mean 'lr'"),
    ("{ lr = [1e-4] }", "sweep.lr = \\[0.0001\\] must be a list of at least two values"),
    ("{ lr = 1e-4 }", "must be a list of at least two values"),
    ("{ lr = [1e-4, 1e-4] }", "lists a value twice"),
    ("{ r = [4, 8] }", "r is also set in this row's options"),
    ("{ lr = [1e-4, -1.0] }", "lr = -1.0: must be > 0"),
    ('{ r = [4, "eight"] }', "r = 'eight' has the wrong type"),
    ("[1, 2]", "must be a table of key = \\[values\\]"),
])
def test_bad_sweeps_name_the_row_key_and_value(tmp_path: Path, sweep: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_matrix(str(write(tmp_path, GOOD.replace('options = { r = 4 }', f'options = {{ r = 4 }}\nsweep = {sweep}'
                                                     if "r = [" not in sweep or "also" in message
                                                     else f'sweep = {sweep}'))))


def test_a_row_is_a_ladder_rung_or_a_sweep_not_both(tmp_path: Path) -> None:
    text = SWEEP.replace('options = { r = 4 }', 'options = { r = 4 }\nladder = "x"')
    with pytest.raises(ConfigError, match="a ladder rung or a sweep, not both"):
        load_matrix(str(write(tmp_path, text)))
