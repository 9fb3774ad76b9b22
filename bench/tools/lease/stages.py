"""The check's stages (bench/data/gpu-check/stages.toml), in order of what a short GPU lease should
bring back first, and their cells: rows of the gpu matrix on the Llama-3.2-1B shape. The rehearsal
runs the same rows, stages and bookkeeping on the tiny random Llama on the CPU. Torch-free."""
from __future__ import annotations

import dataclasses
import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path

from bench.config import Matrix, load_matrix
from bench.errors import ConfigError, did_you_mean
from bench.spec import Cell, ModelSpec
from bench.tools.lease import handloop

STAGE_KEYS = {"title", "rows", "selfcheck", "tests"}
# The rehearsal's cells: the same rows on the tiny random Llama, a few steps on the CPU, one thread
# (256 positions: room for in-context learning's four demonstrations and its query).
REHEARSAL_MODEL = "tiny-llama"
REHEARSAL_SETTINGS = {"batch_size": 2, "seq_len": 256, "steps": 2, "warmup_steps": 1, "eval_batch_size": 8,
                      "threads": 1, "timeout_s": 300.0}
REHEARSAL_EVAL_EXAMPLES = 8  # a cell that evaluates (in-context learning) scores this many


@dataclass(frozen=True)
class Stage:
    number: int
    title: str
    cells: tuple[Cell, ...] = ()
    selfcheck: Cell | None = None  # the cell the harness-overhead check runs, after the cells
    tests: bool = False  # the GPU tests (pytest -m gpu)

    @property
    def name(self) -> str:
        return f"stage {self.number}"


@dataclass(frozen=True)
class Plan:
    matrix: Matrix
    stages: tuple[Stage, ...]
    rehearse: bool
    comparison: dict[str, str]  # the summary's quantized row, its unquantized twin, the prepared row


def cell_of(matrix: Matrix, model: str, variant: str) -> Cell:
    """The matrix's one cell of row `variant` on `model`; an error naming the row if there is not one."""
    found = [c for c in matrix.cells if c.model.name == model and c.method.name == variant]
    if len(found) != 1:
        rows = sorted({c.method.name for c in matrix.cells if c.model.name == model})
        raise ConfigError(f"matrix {matrix.name!r} has {len(found)} cells of row {variant!r} on {model} (the GPU "
                          f"check needs exactly one){did_you_mean(variant, rows)}; its rows on {model}: "
                          f"{', '.join(rows)}")
    return found[0]


def rehearsal(cell: Cell) -> Cell:
    """The cell as the rehearsal runs it: the same method row and recipe on the tiny Llama, tiny steps."""
    s = cell.settings
    evals = 0 if s.eval_examples == 0 else REHEARSAL_EVAL_EXAMPLES
    settings = dataclasses.replace(s, **REHEARSAL_SETTINGS, eval_examples=evals)
    return dataclasses.replace(cell, model=ModelSpec(REHEARSAL_MODEL), settings=settings)


@functools.lru_cache(maxsize=None)
def plan(rehearse: bool, path: Path = handloop.DATA / "stages.toml") -> Plan:
    """The stages with their cells, validated against the matrix before anything runs."""
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    matrix = load_matrix(doc["matrix"])
    model = doc["model"]

    def cell(variant: str) -> Cell:
        found = cell_of(matrix, model, variant)
        return rehearsal(found) if rehearse else found

    stages = []
    for i, entry in enumerate(doc["stages"]):
        for key in entry:
            if key not in STAGE_KEYS:
                raise ConfigError(f"{path}: stages[{i}]: unknown key {key!r}{did_you_mean(key, STAGE_KEYS)}")
        rows = entry.get("rows", [])
        variants = [r.variant for r in handloop.load().rows] if rows == "handloop" else rows
        stages.append(Stage(i + 1, entry["title"], tuple(cell(v) for v in variants),
                            cell(entry["selfcheck"]) if entry.get("selfcheck") else None, bool(entry.get("tests"))))
    comparison = dict(doc["comparison"])
    for role, variant in comparison.items():
        cell_of(matrix, model, variant)  # a row the matrix has
    return Plan(matrix, tuple(stages), rehearse, comparison)
