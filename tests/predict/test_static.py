"""The exact byte counts: the static parts of a prediction equal the measured ones, and the
quantized and optimizer layouts follow bitsandbytes' and torch's."""
from __future__ import annotations

import pytest
import torch

from bench.exec.worker import run_cell
from bench.predict.static import optimizer_bytes, quantized_bytes
from tests.helpers import cell

STATIC = ("parameters_bytes", "gradients_bytes", "optimizer_bytes")


@pytest.mark.parametrize("method, options, settings", [
    ("full", {}, {}),
    ("full", {}, {"precision": "bf16"}),
    ("lora", {"r": 4}, {}),
    ("prompt_tuning", {"num_virtual_tokens": 4}, {}),
    ("qlora", {"r": 4}, {}),
    ("qlora", {"r": 4, "double_quant": True}, {"optimizer": "paged_adamw8bit"}),
    ("int8_lora", {"r": 4}, {"optimizer": "adamw8bit"}),
])
def test_static_predictions_equal_the_measured_parts(method: str, options: dict, settings: dict) -> None:
    rec = run_cell(cell(method, options=options, steps=1, warmup_steps=0, eval_examples=0, **settings))
    assert rec.status == "ok", rec.error
    measured, predicted = rec.memory.breakdown, rec.memory.predicted
    assert {k: getattr(predicted, k) for k in STATIC} == {k: getattr(measured, k) for k in STATIC}
    assert predicted.trainable_params == rec.params.trainable


def test_quantized_bytes_match_the_nominal_bits() -> None:
    n = 768 * 768  # a multiple of 64 and of 64 * 256
    assert 8 * quantized_bytes(n, 768, "4bit") / n == pytest.approx(4 + 32 / 64, rel=1e-3)
    assert 8 * quantized_bytes(n, 768, "4bit", 64, True) / n == pytest.approx(4 + 8 / 64 + 32 / (64 * 256), rel=1e-2)
    assert quantized_bytes(n, 768, "int8") == n + 4 * 768


def test_optimizer_state_by_kind_and_location() -> None:
    big, small = torch.empty(200_000, device="meta"), torch.empty(1000, device="meta")
    bf16 = torch.empty(10, dtype=torch.bfloat16, device="meta")
    assert optimizer_bytes([bf16], "adamw", "cuda") == (2 * 2 * 10 + 4, 0)  # moments in the param's dtype
    # 8-bit: one byte per moment and a fp32 absmax per 256 values; small tensors keep fp32 state
    assert optimizer_bytes([big, small], "adamw8bit", "cuda") == (
        2 * 200_000 + 2 * 4 * 782 + 8 * 1000 + 2 * 1024, 0)
    # paged: the large tensors' moments in managed memory (not on the CPU, where paging falls back)
    assert optimizer_bytes([big, small], "paged_adamw", "cuda") == (8 * 1000, 8 * 200_000)
    assert optimizer_bytes([big, small], "paged_adamw", "cpu") == (8 * 201_000, 0)
