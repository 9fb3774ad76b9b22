"""The check's stages (bench/data/gpu-check/stages.toml): stage 1 is the hand-written loop's ten rows
with its settings, every staged cell is a Llama-3.2-1B row of the gpu matrix, the full and QLoRA
ladders' upper rungs stay out, and the rehearsal runs the same rows on the tiny Llama."""
from __future__ import annotations

from pathlib import Path

import pytest

from bench.errors import ConfigError
from bench.tools.lease import handloop, stages


def test_stage_one_is_the_hand_loops_rows_with_its_settings() -> None:
    plan, hand = stages.plan(False), handloop.load()
    first = plan.stages[0]
    assert [c.method.name for c in first.cells] == [r.variant for r in hand.rows]
    by = {c.method.name: c for c in first.cells}
    for cell in first.cells:  # the loop's shape and timing: 8 x 512, bf16 compute, 3 + 10 steps, AdamW's decay
        s = cell.settings
        assert (cell.model.name, s.batch_size, s.seq_len, s.warmup_steps, s.steps) == (hand.model, 8, 512, 3, 10)
        assert s.weight_decay == 0.01 and s.eval_examples == 0 and s.compile == "off" and s.loss == "standard"
    assert by["full-bf16-mixed"].settings.precision == "bf16-mixed" and by["full-bf16"].settings.precision == "bf16"
    assert by["full-bf16-paged8"].settings.optimizer == "paged_adamw8bit"
    assert {n for n, c in by.items() if c.settings.gradient_checkpointing} == {"lora-r16+ckpt", "qlora-nf4-dq+ckpt"}
    assert {n: (c.method.options.get("double_quant"), c.method.options.get("prepare_for_kbit")) for n, c in by.items()
            if c.method.method == "qlora"} == {"qlora-nf4-prepare": (False, True), "qlora-nf4-dq-prepare": (True, True),
                                               "qlora-nf4-dq": (True, False), "qlora-nf4-dq+ckpt": (True, False)}
    lora = by["lora-r16"].method.options
    assert (lora["r"], lora["alpha"], lora["dropout"]) == (16, 32, 0.0)
    assert by["prompt-tuning-20-random"].method.options["init"] == "random"  # the loop's (and peft's) default


def test_the_stages_hold_the_1b_rows_and_the_lora_ladder_only() -> None:
    plan = stages.plan(False)
    names = [c.method.name for s in plan.stages for c in s.cells]
    assert len(names) == len(set(names)) and {c.model.name for s in plan.stages for c in s.cells} == {"llama-3.2-1b"}
    assert not [n for n in names if n.startswith(("ladder-full", "ladder-qlora"))]
    assert [n for n in names if n.startswith("ladder-lora")] == [
        "ladder-lora+chunked-ce", "ladder-lora+chunked-ce+compile", "ladder-lora+chunked-ce+compile+ckpt"]
    assert plan.stages[2].selfcheck.method.name == "lora-r16" and plan.stages[3].tests
    icl = next(c for s in plan.stages for c in s.cells if c.method.method == "icl")
    assert icl.settings.eval_examples > 0  # a method that trains nothing is measured by its evaluation


def test_the_rehearsal_runs_the_same_rows_on_the_tiny_llama() -> None:
    real, rehearsal = stages.plan(False), stages.plan(True)
    for a, b in zip(real.stages, rehearsal.stages):
        assert [c.method for c in a.cells] == [c.method for c in b.cells]
        assert {c.model.name for c in b.cells} <= {"tiny-llama"}
        for x, y in zip(a.cells, b.cells):  # the recipe stays; only the shape and the step count shrink
            for key in ("precision", "optimizer", "gradient_checkpointing", "compile", "loss", "weight_decay"):
                assert getattr(x.settings, key) == getattr(y.settings, key)


def test_a_stage_row_the_matrix_lacks_is_an_error_naming_it(tmp_path: Path) -> None:
    text = (handloop.DATA / "stages.toml").read_text().replace('"houlsby"', '"houlsbi"')
    (tmp_path / "stages.toml").write_text(text)
    with pytest.raises(ConfigError, match="0 cells of row 'houlsbi' on llama-3.2-1b.*did you mean 'houlsby'"):
        stages.plan(False, tmp_path / "stages.toml")
