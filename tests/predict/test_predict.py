"""The whole prediction: the gpu matrix predicts from configs alone, without loading a weight, and
lands near what a hand-written training loop measured on an H200."""
from __future__ import annotations

from typing import Any

import pytest

from bench.catalog.models import BUILTIN
from bench.config import load_matrix
from bench.errors import UnsupportedError
from bench.predict import predict
from bench.tools.lease import handloop
from tests.helpers import cell


def _llama_params(config: dict[str, Any]) -> int:
    """Parameters of a Llama config with tied embeddings: embedding, per layer q, k, v, o, the
    SwiGLU's three matrices and two norms, and the final norm."""
    h, inter, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    kv = config["num_key_value_heads"] * config["head_dim"]
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * inter + 2 * h
    return config["vocab_size"] * h + layers * per_layer + h


def test_gpu_matrix_predicts_without_weights_and_matches_the_reference_loop() -> None:
    cells = [c for c in load_matrix("gpu").cells if c.model.name == "llama-3.2-1b"]
    got = {c.method.name: predict(c) for c in cells}
    full = got["full-bf16"]
    params = _llama_params(BUILTIN["llama-3.2-1b"].config)
    assert params == 1_235_814_400
    assert full["parameters_bytes"] == 2 * params == full["gradients_bytes"]
    # bf16 moments, and a step tensor for each of 16 x 9 layer tensors, the final norm and the tied embedding
    assert full["optimizer_bytes"] == 2 * full["parameters_bytes"] + 4 * 146
    assert got["full-bf16-mixed"]["parameters_bytes"] == 4 * params
    # torch's peak allocated of a plain transformers + peft + bitsandbytes loop on an H200, row by row
    # (bench/data/gpu-check/handloop.toml, its source named there)
    for row in handloop.load().rows:
        assert got[row.variant]["peak_bytes"] == pytest.approx(row.torch_peak_mib * 2**20, rel=0.05), row.variant
    assert got["icl-0shot-256"]["peak_bytes"] is None and got["icl-0shot-256"]["notes"]


def test_an_unsupported_cell_is_refused_before_anything_is_built() -> None:
    with pytest.raises(UnsupportedError, match="in-context learning"):
        predict(cell("icl", model="tiny-bert", task="mr"))
