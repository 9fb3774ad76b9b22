"""The memory pass: on the CPU a cell's memory figure from a few steps under glibc's `release`
allocator before the timed steps, which keep the defaults' behaviour; the record says which
allocator each figure was taken under, and the pass leaves the training as it would have been."""
from __future__ import annotations

from pathlib import Path

import pytest

from bench.errors import ConfigError
from tests.helpers import cell, tiny_matrix

ROWS = """
[[methods]]
name = "passed"
method = "lora"
options = { r = 2 }
settings = { memory_pass_steps = 2 }
[[methods]]
name = "plain"
method = "lora"
options = { r = 2 }
"""


def test_a_memory_pass_takes_the_figure_under_release_and_leaves_training_as_it_was(tmp_path: Path) -> None:
    from bench.config import load_matrix
    from bench.exec import runner
    from bench.results import store

    path = tmp_path / "m.toml"
    path.write_text(tiny_matrix(ROWS))
    matrix = load_matrix(str(path))
    runner.run_matrix(matrix, matrix.cells, tmp_path / "run", False, {"command": "t", "started_at": "n"})
    recs = {r.variant: r for r in store.read_records(tmp_path / "run")}
    passed, plain = recs["passed"], recs["plain"]
    assert passed.status == plain.status == "ok"
    m = passed.memory
    assert m.cpu_allocator == "release" and m.memory_pass_steps == 2
    assert m.timed_peak_rss_above_baseline_bytes is not None  # the timed steps' own peak, kept beside
    assert m.breakdown.measured_bytes == m.peak_rss_above_baseline_bytes  # the breakdown splits the pass's
    assert any("memory pass" in n for n in m.notes) and any("32 MiB" in n for n in m.notes)
    assert plain.memory.cpu_allocator == "default" and plain.memory.memory_pass_steps is None
    # the pass's steps (learning rate 0, optimizer and random state put back) change no timed step
    assert passed.quality.train_loss == pytest.approx(plain.quality.train_loss, rel=1e-6)


def test_memory_pass_steps_is_validated() -> None:
    with pytest.raises(ConfigError, match="memory_pass_steps"):
        cell("lora", memory_pass_steps=-1)
