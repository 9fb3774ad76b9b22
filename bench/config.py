"""Matrix files: TOML in, a validated list of cells out. Nothing here imports torch."""
from __future__ import annotations

import dataclasses
import fnmatch
import itertools
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import schema
from bench.errors import ConfigError, did_you_mean
from bench.spec import Cell, MethodSpec, Settings

MATRIX_DIR = Path(__file__).parent / "matrices"


@dataclass(frozen=True)
class Matrix:
    name: str
    path: Path
    description: str
    cells: list[Cell]
    jobs: int = 1  # cells run at once on a CPU machine (timings are then contended: smoke runs only)

    def select(self, pattern: str | list[str] | None) -> list[Cell]:
        """The cells whose name or variant name matches the glob (any of the globs, given several)."""
        if not pattern:
            return list(self.cells)
        globs = [pattern] if isinstance(pattern, str) else pattern
        return [c for c in self.cells
                if any(fnmatch.fnmatch(c.name, g) or fnmatch.fnmatch(c.method.name, g) for g in globs)]


TOP_KEYS = {"name", "description", "models", "tasks", "methods", "seeds", "defaults", "settings", "jobs"}


METHOD_KEYS = {"name", "method", "options", "settings", "models", "ladder", "sweep"}
SWEEP_LIMIT = 64  # grid points per method row


def _check_subset(only: Any, names: list[str], where: str, kind: str) -> None:
    """A restriction list must be a non-empty list of names the matrix defines."""
    if only is None:
        return
    if not isinstance(only, list) or not only or not all(isinstance(n, str) for n in only):
        raise ConfigError(f"{where} = {only!r} must be a non-empty list of {kind} names")
    for n in only:
        if n not in names:
            raise ConfigError(f"{where}: {n!r} is not a {kind} of this matrix{did_you_mean(n, names)}")


def builtin_matrices() -> list[str]:
    return sorted(p.stem for p in MATRIX_DIR.glob("*.toml"))


def resolve_matrix_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"matrix file {str(path)!r} does not exist")
        return path
    if name_or_path not in builtin_matrices():
        raise ConfigError(f"unknown matrix {name_or_path!r}{did_you_mean(name_or_path, builtin_matrices())}"
                          " (or give a path to a .toml file)")
    return MATRIX_DIR / f"{name_or_path}.toml"


def load_matrix(name_or_path: str) -> Matrix:
    path = resolve_matrix_path(name_or_path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc}") from None
    return parse_matrix(doc, path)


def _list(doc: dict[str, Any], key: str, where: str) -> list[Any]:
    value = doc.get(key)
    if value is None:
        raise ConfigError(f"{where}: missing required key {key!r}")
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: {key} = {value!r} must be a non-empty list")
    return value


def _sweep(sweep: Any, config_cls: type, options: dict[str, Any], overrides: dict[str, Any], where: str,
           method: str) -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """A method row's grid, `sweep = { lr = [1e-4, 3e-4, 1e-3] }` (a setting or a method option per
    key, a list of at least two values each): (point, its options, its settings) per point, in the
    order of the lists, the first key slowest."""
    option_keys = {f.name for f in dataclasses.fields(config_cls)}
    setting_keys = {f.name for f in dataclasses.fields(Settings)} | {"activation_checkpointing"}
    if not isinstance(sweep, dict) or not sweep:
        raise ConfigError(f"{where} = {sweep!r} must be a table of key = [values], "
                          "e.g. sweep = { lr = [1e-4, 1e-3] }")
    for key, values in sweep.items():
        if key not in option_keys | setting_keys:
            raise ConfigError(f"{where}: {key!r} is neither a setting nor an option of {method}"
                              f"{did_you_mean(key, sorted(option_keys | setting_keys))}")
        if key in options or key in overrides:
            raise ConfigError(f"{where}: {key} is also set in this row's options or settings; give it in one place")
        if not isinstance(values, list) or len(values) < 2:
            raise ConfigError(f"{where}.{key} = {values!r} must be a list of at least two values (one value is "
                              "a setting, not a sweep)")
        if len({repr(v) for v in values}) != len(values):
            raise ConfigError(f"{where}.{key} = {values!r} lists a value twice")
    grid = list(itertools.product(*sweep.values()))
    if len(grid) > SWEEP_LIMIT:
        raise ConfigError(f"{where}: {len(grid)} grid points; at most {SWEEP_LIMIT} per row")
    out = []
    for values in grid:
        point = dict(zip(sweep, values))
        out.append((point, {**options, **{k: v for k, v in point.items() if k in option_keys}},
                    {**overrides, **{k: v for k, v in point.items() if k not in option_keys}}))
    return out


def _point_name(point: dict[str, Any]) -> str:
    """lr=0.0003,r=8: what a grid point adds to its row's name."""
    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        return f"{v:g}" if isinstance(v, float) else str(v).replace("/", "_")
    return ",".join(f"{k}={fmt(v)}" for k, v in point.items())


CHECKPOINTING = {False: False, "off": False, True: True, "full": True}


def _checkpointing_alias(table: dict[str, Any], where: str) -> dict[str, Any]:
    """`activation_checkpointing` (off, full or k: every k-th layer; transformers' newer name) is the
    setting `gradient_checkpointing` (false, true or k) under the name cells have always recorded, so
    cell ids do not change with the spelling."""
    if "activation_checkpointing" not in table:
        return table
    table = dict(table)
    value = table.pop("activation_checkpointing")
    if "gradient_checkpointing" in table:
        raise ConfigError(f"{where}: activation_checkpointing and gradient_checkpointing are one setting; "
                          "give only one")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        table["gradient_checkpointing"] = value
    elif isinstance(value, (bool, str)) and value in CHECKPOINTING:
        table["gradient_checkpointing"] = CHECKPOINTING[value]
    else:
        raise ConfigError(f"{where}: activation_checkpointing = {value!r} is not valid; valid choices: "
                          "'off' (or false), 'full' (or true: every decoder layer), or a positive integer k "
                          "(every k-th layer)")
    return table


def parse_matrix(doc: dict[str, Any], path: Path) -> Matrix:
    """Validate a parsed TOML document into a Matrix; every error names the file and key."""
    from bench.catalog import models, tasks  # noqa: PLC0415 (both are torch-free at import)
    from bench.registry import method_class

    where = str(path)
    for key in doc:
        if key not in TOP_KEYS:
            raise ConfigError(f"{where}: unknown key {key!r}{did_you_mean(key, TOP_KEYS)}")
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigError(f"{where}: defaults must be a table, got {defaults!r}")
    axis = doc.get("settings", [{}])
    if isinstance(axis, dict):
        axis = [axis]
    if not isinstance(axis, list) or not axis or not all(isinstance(a, dict) for a in axis):
        raise ConfigError(f"{where}: settings must be a table or an array of tables ([[settings]]), got {axis!r}")

    model_specs, model_tasks, model_settings = [], [], []
    for i, m in enumerate(_list(doc, "models", where)):
        only, overrides = None, {}
        if isinstance(m, dict):
            m = dict(m)
            only = m.pop("tasks", None)  # this model runs only these tasks
            overrides = m.pop("settings", {})  # and with these settings
            if not isinstance(overrides, dict):
                raise ConfigError(f"{where}: models[{i}].settings must be a table, got {overrides!r}")
        model_specs.append(models.parse_spec(m, f"{where}: models[{i}]"))
        model_tasks.append(only)
        model_settings.append(overrides)
    task_specs = [tasks.parse_spec(t, f"{where}: tasks[{i}]") for i, t in enumerate(_list(doc, "tasks", where))]
    task_names = [t.name for t in task_specs]
    for i, only in enumerate(model_tasks):
        _check_subset(only, task_names, f"{where}: models[{i}].tasks", "task")
    seeds = doc.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"{where}: seeds = {seeds!r} must be a non-empty list of integers")

    method_specs: list[MethodSpec] = []
    method_models: list[list[str] | None] = []
    rungs: dict[str, int] = {}  # rows per ladder so far: a row's rung is its place among its ladder's rows
    for i, row in enumerate(_list(doc, "methods", where)):
        mwhere = f"{where}: methods[{i}]"
        if isinstance(row, str):
            row = {"method": row}
        if not isinstance(row, dict):
            raise ConfigError(f"{mwhere}: expected a method name or a table, got {row!r}")
        unknown = set(row) - METHOD_KEYS
        if unknown:
            key = sorted(unknown)[0]
            raise ConfigError(f"{mwhere}: unknown key {key!r}{did_you_mean(key, METHOD_KEYS)}")
        _check_subset(row.get("models"), [m.name for m in model_specs], f"{mwhere}.models", "model")
        if not isinstance(row.get("method"), str):
            raise ConfigError(f"{mwhere}: missing required key 'method' (a registered method name)")
        cls = method_class(row["method"], f"{mwhere}.method")
        options = row.get("options", {})
        config = schema.build(cls.Config, options, f"{mwhere}.options ({row['method']})")
        overrides = row.get("settings", {})
        if not isinstance(overrides, dict):
            raise ConfigError(f"{mwhere}.settings must be a table, got {overrides!r}")
        name = row.get("name", row["method"])
        if not isinstance(name, str) or not name or "/" in name:
            raise ConfigError(f"{mwhere}.name = {name!r} must be a non-empty string without '/'")
        ladder = row.get("ladder")
        if ladder is not None and (not isinstance(ladder, str) or not ladder):
            raise ConfigError(f"{mwhere}.ladder = {ladder!r} must be a non-empty string (the ladder's name; "
                              "rows of one ladder are its rungs, in matrix order)")
        rung = None
        if ladder:
            rung = rungs[ladder] = rungs.get(ladder, -1) + 1
        if "sweep" in row:
            if ladder:
                raise ConfigError(f"{mwhere}: a row is a ladder rung or a sweep, not both (give the sweep its own row)")
            points = _sweep(row["sweep"], cls.Config, options, overrides, f"{mwhere}.sweep", row["method"])
            for point, point_options, point_settings in points:
                config = schema.build(cls.Config, point_options, f"{mwhere}.options ({row['method']}) at {point}")
                method_specs.append(MethodSpec(f"{name}@{_point_name(point)}", row["method"],
                                               dataclasses.asdict(config), point_settings, sweep=name,
                                               sweep_point=point))
                method_models.append(row.get("models"))
            continue
        method_specs.append(MethodSpec(name, row["method"], dataclasses.asdict(config), overrides, ladder, rung))
        method_models.append(row.get("models"))  # one entry per method spec, a sweep's points included
    names = [m.name for m in method_specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{where}: methods: the name {dupes[0]!r} is used twice; give each row its own 'name'")

    cells: list[Cell] = []
    for (mi, model), (ri, method), task, (j, ax), seed in itertools.product(
            enumerate(model_specs), enumerate(method_specs), task_specs, enumerate(axis), seeds):
        if model_tasks[mi] is not None and task.name not in model_tasks[mi]:
            continue
        if method_models[ri] is not None and model.name not in method_models[ri]:
            continue
        table = {**defaults, **ax, **model_settings[mi], **method.settings}
        origin = (f"{where}: settings (defaults + settings[{j}] + models '{model.name}'.settings"
                  f" + methods '{method.name}'.settings)")
        settings = schema.build(Settings, _checkpointing_alias(table, origin), origin)
        cells.append(Cell(model, method, task, settings, seed))
    if not cells:
        raise ConfigError(f"{where}: the restrictions (models[].tasks, methods[].models) leave no cell to run")
    ids = [c.cell_id for c in cells]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{where}: two cells resolve to the same configuration; remove the duplicate rows")
    jobs = doc.get("jobs", 1)
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ConfigError(f"{where}: jobs = {jobs!r} must be a positive integer (cells run at once)")
    name = doc.get("name", path.stem)
    return Matrix(str(name), path, str(doc.get("description", "")), cells, jobs)
