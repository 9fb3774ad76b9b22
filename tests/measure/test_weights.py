"""Weight bytes read from the tensors: every storage once. (Quantized weights, with bitsandbytes,
are checked in tests/methods/test_qlora.py.)"""
from __future__ import annotations

import torch

from bench.measure.weights import bits_per_param, bits_per_param_of, weights_breakdown


def test_unquantized_model_counts_each_storage_once() -> None:
    a, b = torch.nn.Linear(8, 8, bias=False), torch.nn.Linear(8, 8, bias=False)
    b.weight = torch.nn.Parameter(a.weight.data)  # another Parameter over the same storage (tied)
    model = torch.nn.Sequential(a, b)
    model.register_buffer("scale", torch.ones(4))
    assert weights_breakdown(model) == {"quantized_payload_bytes": 0, "quant_constants_bytes": 0,
                                        "unquantized_bytes": 8 * 8 * 4 + 4 * 4, "quantized_params": 0}
    assert weights_breakdown(model, buffers=False)["unquantized_bytes"] == 8 * 8 * 4
    assert bits_per_param(model) is None


def test_bits_per_param_is_payload_and_constants_over_quantized_params() -> None:
    split = {"quantized_payload_bytes": 512, "quant_constants_bytes": 64, "unquantized_bytes": 10**6,
             "quantized_params": 1024}
    assert bits_per_param_of(split) == 8 * (512 + 64) / 1024  # 4.5: the unquantized bytes do not count
