"""Weight bytes read from the tensors: every storage once. (Quantized weights, with bitsandbytes,
are checked in tests/methods/test_qlora.py.)"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.measure.weights import bits_per_param, bits_per_param_of, checkpoint_bytes, weights_breakdown


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


@pytest.mark.parametrize("seed", range(4))
def test_the_checkpoint_is_sized_as_the_file_safetensors_writes(tmp_path: Path, seed: int) -> None:
    """Sized from shapes and dtypes alone, in safetensors' own order (dtypes, then names), so the
    header's offsets, and with them its length, are the file's."""
    import random

    from safetensors.torch import save_file

    rng = random.Random(seed)
    dtypes = [torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.uint8, torch.int8, torch.float64,
              torch.bool, torch.int32]
    params = {f"layer.{rng.randint(0, 999)}.{name}": torch.zeros(rng.randint(1, 70000), dtype=rng.choice(dtypes))
              for name in ("a", "b", "c", "d", "e", "f", "g", "h", "lora_A", "lora_B")}
    save_file(params, str(tmp_path / "real.safetensors"))
    assert checkpoint_bytes(params) == (tmp_path / "real.safetensors").stat().st_size
    assert checkpoint_bytes({}) == 0
