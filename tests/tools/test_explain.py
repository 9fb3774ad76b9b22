"""`bench explain` (bench/tools/explain.py): one cell's peak against the memory model's parts; two
cells' difference split into each differing setting's predicted share plus what is left, the parts
adding up to the measured difference exactly."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.predict import predict
from bench.results import store
from bench.results.values import GIB
from bench.tools import explain
from tests.fixtures.make_fixtures import record
from tests.helpers import cell


def _rec(seq_len: int, precision: str, peak_gib: float, cuda: bool = False, **settings):
    c = cell("lora", seq_len=seq_len, precision=precision, **settings)
    rec = record(random.Random(seq_len), model="tiny-llama", variant="lora", method="lora", task="synthetic",
                 seed=0, cuda=cuda, step_s=0.05, mem_gib=peak_gib, acc=0.8, settings=c.settings.record())
    rec.set(model_spec=c.model.record(), method_config=c.method.options, task_options=c.task.options,
            name=c.name)
    return rec, c


def test_a_record_gives_back_the_cell_it_ran() -> None:
    rec, c = _rec(64, "fp32", 0.5)
    assert explain.cell_of(rec).cell_id == c.cell_id


def test_two_cells_differing_in_seq_len_and_precision_split_into_shares_that_add_up() -> None:
    a, ca = _rec(32, "fp32", 0.10)
    b, cb = _rec(128, "bf16", 0.13)
    ex = explain.two(a, b)
    names = [p.name for p in ex.parts]
    assert names == ["seq_len: 32 -> 128", "precision: fp32 -> bf16", "unexplained"]
    measured = b.memory.peak_rss_above_baseline_bytes - a.memory.peak_rss_above_baseline_bytes
    assert sum(p.bytes for p in ex.parts) == pytest.approx(measured)  # the parts add up exactly
    predicted = predict(cb, "cpu")["peak_bytes"] - predict(ca, "cpu")["peak_bytes"]
    assert sum(p.bytes for p in ex.parts[:-1]) == pytest.approx(predicted)  # the shares are the model's
    assert ex.parts[0].bytes > 0 and ex.parts[1].bytes < 0  # longer rows cost memory, bf16 saves it
    assert "left unexplained" in ex.text() and "GiB" in ex.text()


def test_a_figure_measured_where_the_model_is_right_leaves_nothing_unexplained() -> None:
    a, ca = _rec(32, "fp32", 0.10)
    b, cb = _rec(128, "fp32", 0.10)
    a.memory.peak_rss_above_baseline_bytes = predict(ca, "cpu")["peak_bytes"]
    b_peak = predict(cb, "cpu")["peak_bytes"]
    ex = explain.two(a, b, b_measured=b_peak)
    assert ex.unexplained_bytes == pytest.approx(0, abs=1)


def test_environment_and_accounting_differences_are_named() -> None:
    a, _ = _rec(32, "fp32", 0.10)
    b, _ = _rec(32, "fp32", 0.12, cuda=True)
    ex = explain.two(a, b, {"packages": {"torch": "2.13.0"}}, {"packages": {"torch": "2.11.0"}})
    text = ex.text()
    assert "accounting differs" in text and "torch 2.13.0 -> 2.11.0" in text
    assert [p.name for p in ex.parts] == ["unexplained"]  # same settings: nothing for the model to share out


def test_different_methods_are_refused() -> None:
    a, _ = _rec(32, "fp32", 0.10)
    b, _ = _rec(32, "fp32", 0.10)
    b.method_config = {**b.method_config, "r": 64}
    with pytest.raises(BenchError, match="differ in model or method"):
        explain.two(a, b)


def test_one_cell_lists_predicted_parts_and_the_gap() -> None:
    a, ca = _rec(64, "fp32", 0.10)
    ex = explain.one(a)
    text = ex.text()
    for part in ("parameters", "gradients", "optimizer state", "activations", "measured - predicted"):
        assert part in text
    assert ex.unexplained_bytes == pytest.approx(0.10 * GIB - predict(ca, "cpu")["peak_bytes"], rel=1e-6)


def test_the_cli_explains_a_run_against_a_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench import cli

    a, _ = _rec(32, "fp32", 0.10)
    store.append_record(tmp_path, a)
    assert cli.main(["explain", str(tmp_path), "--figure-gib", "0.2", "--set", "seq_len=128",
                     "--set", 'precision="bf16"']) == 0
    out = capsys.readouterr().out
    assert "seq_len: 32 -> 128" in out and "precision: fp32 -> bf16" in out and "unexplained" in out
    assert cli.main(["explain", str(tmp_path), "--figure-gib", "0.2", "--set", "precision=fp16"]) == 2
    assert "precision = 'fp16' is not valid" in capsys.readouterr().err


def test_the_cpu_allocator_is_accounting_not_a_predicted_share() -> None:
    a, _ = _rec(32, "fp32", 0.10)
    b, _ = _rec(32, "fp32", 0.08, cpu_allocator="release")
    ex = explain.two(a, b)
    assert [p.name for p in ex.parts] == ["unexplained"]  # the model predicts live tensors either way
    assert "accounting differs: cpu_allocator default -> release" in ex.text()
    assert "cpu_allocator = \"release\"" in explain.one(a).text()  # the default's note points at the setting
    assert "cpu_allocator" not in explain.one(b).text()


def test_a_figure_a_memory_pass_took_under_release_gets_no_advice_to_use_release() -> None:
    """What the record says its figure was taken under decides, not the cell's setting (a memory pass
    takes it under release while the timed steps keep the default)."""
    rec, _ = _rec(32, "fp32", 0.10, memory_pass_steps=2)
    rec.memory.set(cpu_allocator="release", memory_pass_steps=2)
    assert "cpu_allocator = \"release\"" not in explain.one(rec).text()
    rec.memory.cpu_allocator = "default"
    assert "cpu_allocator = \"release\"" in explain.one(rec).text()
