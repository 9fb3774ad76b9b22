"""The memory model: static parts equal the measured ones, the activation formula matches what
autograd really keeps (on the CPU), and the gpu matrix predicts without loading a weight."""
from __future__ import annotations

import contextlib
import time
import warnings
from typing import Any

import pytest
import torch

from bench import build
from bench.config import load_matrix
from bench.memory_model import optimizer_bytes, predict, quantized_bytes
from bench.worker import run_cell
from tests.helpers import cell

STATIC = ("parameters_bytes", "gradients_bytes", "optimizer_bytes")


@pytest.fixture(autouse=True)
def _quiet() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


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
    assert rec["status"] == "ok", rec["error"]
    measured, predicted = rec["memory"]["breakdown"], rec["memory"]["predicted"]
    assert {k: predicted[k] for k in STATIC} == {k: measured[k] for k in STATIC}
    assert predicted["trainable_params"] == rec["params"]["trainable"]


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


def _saved_bytes(model: torch.nn.Module, batch: dict[str, torch.Tensor], autocast: Any) -> int:
    """Bytes of the distinct non-parameter storages autograd keeps for the backward."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast():
        model(**batch).loss
    return sum(seen.values())


@pytest.mark.parametrize("method, options, precision", [
    ("full", {}, "fp32"), ("full", {}, "bf16"), ("full", {}, "bf16-mixed"),
    ("lora", {"r": 4, "dropout": 0.0}, "fp32"), ("lora", {"r": 4, "dropout": 0.1}, "fp32"),
    ("lora", {"r": 4, "dropout": 0.0}, "bf16-mixed"), ("prompt_tuning", {"num_virtual_tokens": 4}, "fp32"),
    ("houlsby", {"m": 8}, "fp32"), ("ia3", {}, "fp32"),
])
def test_activation_formula_matches_what_autograd_keeps(method: str, options: dict, precision: str) -> None:
    c = cell(method, options=options, precision=precision, batch_size=4, seq_len=64)
    built = build.build(build.plan(c, torch.device("cpu")))
    batch = next(built.batcher.train_batches(4, 1, 0, torch.device("cpu")))
    autocast = ((lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16-mixed"
                else contextlib.nullcontext)
    built.model.train()
    measured = _saved_bytes(built.model, batch, autocast)
    p = predict(c, "cpu")
    detail, tokens = p["detail"], c.settings.batch_size * p["positions"]
    # the forward also keeps the fp32 log-probabilities (part of the predicted loss temporaries)
    # and the batch's ids and labels (int64, counted with the inputs)
    expected = detail["saved_bytes"] + detail["weight_casts_bytes"] + 4 * 320 * tokens + 2 * 8 * 4 * 64
    assert expected == pytest.approx(measured, rel=0.01)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_padded_rows_bring_a_mask_and_repeated_heads(precision: str) -> None:
    # the packaged movie-review sentences are short: rows are padded to seq_len 256
    c = cell("full", task="mr", precision=precision, batch_size=4, seq_len=256)
    built = build.build(build.plan(c, torch.device("cpu")))
    batch = next(built.batcher.train_batches(4, 1, 0, torch.device("cpu")))
    assert int(batch["attention_mask"].sum()) < batch["attention_mask"].numel()
    built.model.train()
    measured = _saved_bytes(built.model, batch, contextlib.nullcontext)
    p = predict(c, "cpu", 2, padded=True)
    tokens = c.settings.batch_size * p["positions"]
    assert p["detail"]["saved_bytes"] + 4 * 320 * tokens + 2 * 8 * tokens == pytest.approx(measured, rel=0.01)
    assert p["detail"]["saved_bytes"] > predict(c, "cpu", 2)["detail"]["saved_bytes"]


def test_gpu_matrix_predicts_without_weights_and_matches_the_reference_loop() -> None:
    cells = [c for c in load_matrix("gpu").cells if c.model.name == "llama-3.2-1b"]
    t0 = time.perf_counter()
    got = {c.method.name: predict(c) for c in cells}
    assert time.perf_counter() - t0 < 120  # meta tensors only: nothing is materialised
    full = got["full-bf16"]
    assert full["parameters_bytes"] == 2 * 1_235_814_400 == full["gradients_bytes"]
    # bf16 moments, and a step tensor for each of 16 x 9 layer tensors, the final norm and the tied embedding
    assert full["optimizer_bytes"] == 2 * full["parameters_bytes"] + 4 * 146
    assert got["full-bf16-mixed"]["parameters_bytes"] == 4 * 1_235_814_400
    # torch peak allocated of the hand-written reference loop on an H200 (shared/device/README.md)
    reference_mib = {"full-bf16-mixed": 30_730, "full-bf16": 20_006, "lora-r16": 18_456,
                     "qlora-nf4-dq": 17_079, "qlora-nf4-dq-prepare": 24_099, "prompt-tuning-20": 13_647}
    for name, mib in reference_mib.items():
        assert got[name]["peak_bytes"] == pytest.approx(mib * 2**20, rel=0.05), name
    assert got["icl-4shot"]["peak_bytes"] is None and got["icl-4shot"]["notes"]
