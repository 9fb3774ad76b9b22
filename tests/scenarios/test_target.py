"""Time to a target accuracy (bench/scenarios/target.py, bench/report/target.py): evaluations on the
validation split at the chosen steps, kept out of the training time, the step time and the energy;
the first point at the target recorded, or "not reached in N steps"; the report's ranking table."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from bench import schema
from bench.errors import ConfigError
from bench.exec.worker import run_cell
from bench.report import render
from bench.report.data import load
from bench.report.target import frame
from bench.results import store
from bench.spec import Settings
from tests.fixtures.make_fixtures import record
from tests.helpers import cell, fake_clock


@pytest.mark.parametrize(("key", "value", "message"), [
    ("target_accuracy", 75, "target_accuracy = 75.0: must be in \\(0, 1\\]"),
    ("target_accuracy", 0.0, "must be in \\(0, 1\\]"),
    ("target_every", 0, "target_every = 0: must be a positive integer"),
    ("target_examples", -1, "target_examples = -1: must be a positive integer"),
])
def test_bad_target_settings_name_the_field(key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        schema.build(Settings, {key: value}, "m.toml")


def test_a_target_at_its_defaults_keeps_a_cells_id() -> None:
    assert "target_accuracy" not in cell("lora").identity()["settings"]
    assert cell("lora", target_accuracy=0.7).cell_id != cell("lora").cell_id


def _run(monkeypatch: pytest.MonkeyPatch, target: float, **kw: Any):
    clock = fake_clock(monkeypatch)  # 0.25 s a step, 1 s an evaluation, 10 W
    rec = run_cell(cell("lora", steps=10, warmup_steps=2, lr=3e-3, eval_batch_size=16, target_accuracy=target,
                        target_every=4, target_examples=128, **kw))
    return rec, clock


def test_the_curve_is_scored_on_validation_at_every_interval_and_the_last_step(monkeypatch) -> None:
    rec, clock = _run(monkeypatch, target=0.01)  # any accuracy reaches it: the first evaluation does
    assert rec.status == "ok", rec.error
    t = rec.target
    assert [p["step"] for p in t.curve] == [4, 8, 12] and t.examples == 128 and t.every == 4
    assert t.reached and t.step == 4 and t.train_s == t.curve[0]["train_s"] and t.note is None
    assert t.tokens == t.curve[0]["tokens"] == 4 * 4 * 32  # the synthetic task fills its 32 positions
    assert [p["tokens"] for p in t.curve] == [4 * 128, 8 * 128, 12 * 128]
    # on the fake clock the three evaluations (1 s each, between the steps) are in none of the figures:
    # each point's seconds and joules are its steps' alone, warm-up included
    step = clock.step_s
    assert [p["train_s"] for p in t.curve] == pytest.approx([4 * step, 8 * step, 12 * step])
    assert [p["joules"] for p in t.curve] == pytest.approx([10.0 * 4 * step, 10.0 * 8 * step, 10.0 * 12 * step])
    assert t.joules == pytest.approx(10.0 * 4 * step)
    assert rec.time.train_s == pytest.approx(12 * step)
    # the energy span: the 10 timed steps, the evaluations inside it taken out
    assert rec.energy.train_s == pytest.approx(10 * step) and rec.energy.train_j == pytest.approx(10.0 * 10 * step)
    assert any("validation evaluations every 4 steps" in n for n in rec.memory.notes or [])


def test_a_target_not_reached_says_so_with_the_best_accuracy(monkeypatch) -> None:
    rec, _ = _run(monkeypatch, target=1.0, padding="longest", loss="chunked")  # the head is swapped out in training
    t = rec.target
    assert rec.status == "ok", rec.error
    assert t.reached is False and t.step is None and t.train_s is None
    assert t.note.startswith("not reached in 12 steps (best validation accuracy ")
    assert all(0 <= p["accuracy"] <= 1 for p in t.curve)  # scored with the LM head in place


def test_random_weights_on_natural_text_have_no_time_to_target() -> None:
    rec = run_cell(cell("lora", "tiny-llama", task="mr", steps=2,
                        warmup_steps=0, target_accuracy=0.7, eval_examples=0))
    assert rec.target.curve is None and "random weights on natural text" in (rec.target.note or "")


def _group_run(tmp_path: Path) -> Path:
    rng = random.Random(4)
    for variant, method, reached_at in (("lora", "lora", (2.0, 3.0)), ("full", "full", (1.0, 1.5)),
                                         ("ia3", "ia3", (None, None))):
        for seed, at in enumerate(reached_at):
            rec = record(rng, model="m", variant=variant, method=method, task="t", seed=seed, cuda=False,
                         step_s=0.05, mem_gib=0.3, acc=0.8)
            curve = [{"step": 10, "train_s": 0.5, "tokens": 1000, "joules": None, "accuracy": 0.6}]
            if at is not None:
                curve.append({"step": 20, "train_s": at, "tokens": 2000, "joules": None, "accuracy": 0.8})
            rec.target.set(metric="accuracy", value=0.75, every=10, examples=100, curve=curve,
                           reached=at is not None, step=20 if at else None, train_s=at, tokens=2000 if at else None,
                           note=None if at else "not reached in 20 steps")
            store.append_record(tmp_path, rec)
    return tmp_path


def test_the_report_ranks_groups_by_time_to_target(tmp_path: Path) -> None:
    f = frame(load(_group_run(tmp_path)))
    assert list(f["group"]) == ["full", "lora", "ia3"]  # fastest first, never reached last
    assert f["train_s"][0] == pytest.approx(1.25) and f["train_s_ci95"][0] > 0
    assert list(f["reached"]) == [2, 2, 0] and f["note"][2] == "not reached in 20 steps"
    out = render(tmp_path, ["md", "png"])
    md = (out / "report.md").read_text()
    assert "## Time to target" in md and "| full | t | 75.0 | 2/2 | 1.2 ± " in md
    assert (out / "target.png").stat().st_size > 0
