"""FLOPs of a training step and MFU: counts against 6N per token, frozen bases count fewer, the
peak table, and the record's arithmetic."""
from __future__ import annotations

import contextlib
from typing import Any

import pytest
import torch

from bench import build, recipe
from bench.catalog.batches import IGNORE
from bench.exec.worker import run_cell
from bench.measure import flops
from bench.measure.accuracy import evaluate
from tests.helpers import built as build_cell
from tests.helpers import cell, first_batch, tiny_config


def _count(method: str, options: dict[str, Any] | None = None,
           evaluate_first: bool = False) -> tuple[int, build.Built, dict[str, torch.Tensor]]:
    built = build_cell(method, options=options)
    if evaluate_first:  # an evaluation before training, as a cell with accuracy_before runs one
        evaluate(built.model, built.batcher, built.plan.task.test_subset(8), 8, torch.device("cpu"))
    batch = first_batch(built)
    return flops.count_step_flops(built.model, batch, contextlib.nullcontext, built.trainable), built, batch


def _matmul_params(model: torch.nn.Module) -> int:
    return sum(m.weight.numel() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lora" not in n)


def test_full_step_counts_six_n_per_token_plus_attention() -> None:
    counted, built, batch = _count("full")
    b, s = batch["input_ids"].shape
    config = tiny_config("tiny-llama")
    heads, layers = config.num_attention_heads, config.num_hidden_layers
    head_dim = config.hidden_size // heads
    attention = layers * 2 * b * heads * s * s * (2 * head_dim) * (1 + 2.5)  # forward, and 5 matmuls back
    # Small ops outside the linears and attention (rotary's position matmul: 512 FLOPs here) come
    # and go between transformers releases; they stay far below this tolerance.
    assert counted == pytest.approx(6 * _matmul_params(built.model) * b * s + attention, rel=1e-4)
    assert all(p.grad is None for p in built.trainable)  # the count leaves no gradients behind


def test_frozen_base_counts_fewer_than_full() -> None:
    full, built, batch = _count("full")
    lora, _, _ = _count("lora", {"r": 4})
    tokens = batch["input_ids"].numel()
    assert lora < full
    assert lora > 4 * _matmul_params(built.model) * tokens  # forward and input gradients still run


QUANTIZED = [("qlora", {"quant_type": "nf4"}), ("qlora", {"quant_type": "nf4", "double_quant": True}),
             ("qlora", {"quant_type": "fp4"}), ("qlora", {"quant_type": "fp4", "double_quant": True}),
             ("int8_lora", {})]


@pytest.mark.parametrize("evaluate_first", [False, True], ids=["train-only", "after-evaluation"])
@pytest.mark.parametrize("method, options", QUANTIZED, ids=lambda x: x if isinstance(x, str) else
                         "-".join(f"{k}={v}" for k, v in x.items()) or "default")
def test_quantized_base_counts_the_same_matmuls_as_lora(method: str, options: dict[str, Any],
                                                        evaluate_first: bool) -> None:
    lora, _, _ = _count("lora", {"r": 4})
    quantized, built, _ = _count(method, {"r": 4, **options}, evaluate_first)
    assert any(flops.is_quantized_linear(m) for m in built.model.modules())
    assert quantized == lora  # same logical matmuls; the kernels bitsandbytes picks do not count


def test_quantized_layers_are_restored_after_the_count() -> None:
    _, built, batch = _count("qlora", {"r": 4})
    layers = [m for m in built.model.modules() if flops.is_quantized_linear(m)]
    assert layers and all("forward" not in m.__dict__ for m in layers)
    x = torch.randn(2, layers[0].in_features)
    assert layers[0](x).abs().sum() > 0  # the real 4-bit weight again, not the count's zeros


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H200", 989.0),
    ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA L40S", 362.0), ("NVIDIA GeForce RTX 4090", 165.0),
    ("NVIDIA A10G", 125.0), ("NVIDIA L4", 121.0),
])
def test_peak_table(name: str, peak: float, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(flops.PEAK_ENV, raising=False)
    assert flops.peak_tflops(name, True)[0] == peak


def test_unknown_gpu_and_cpu_have_no_peak_and_say_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(flops.PEAK_ENV, raising=False)
    assert flops.peak_tflops("Some Future GPU", True) == (None, "unknown GPU 'Some Future GPU': no peak in the "
                                                                "table (set --peak-tflops)")
    value, why = flops.peak_tflops("Intel Xeon", False)
    assert value is None and "CPU" in why
    monkeypatch.setenv(flops.PEAK_ENV, "100")
    assert flops.peak_tflops("Intel Xeon", False)[0] == 100.0
    monkeypatch.setenv(flops.PEAK_ENV, "fast")
    assert flops.peak_tflops("NVIDIA H100 80GB HBM3", True)[0] is None


def test_record_arithmetic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(flops.PEAK_ENV, raising=False)
    rec = flops.flops_record(int(2e12), 0.01, "NVIDIA H200", True, "bf16", False)
    assert rec["achieved_tflops"] == pytest.approx(200.0)
    assert rec["mfu"] == pytest.approx(200.0 / 989.0) and rec["peak_tflops"] == 989.0
    cpu = flops.flops_record(1000, 0.5, "Xeon", False, "fp32", True)
    assert cpu["mfu"] is None and "CPU" in cpu["mfu_note"] and "checkpointing" in cpu["mfu_note"]
    assert flops.flops_record(None, 0.5, "Xeon", False, "fp32", False, "not counted")["mfu_note"] == "not counted"
    assert rec["recomputed_flops_excluded"] == 0 and rec["flops_per_step"] == int(2e12)
    chunked = flops.flops_record(1100, 0.5, "Xeon", False, "fp32", False, recomputed=100)
    assert (chunked["flops_per_step"], chunked["recomputed_flops_excluded"]) == (1000, 100)
    assert chunked["achieved_tflops"] == pytest.approx(1000 / 0.5 / 1e12)


def test_grouped_query_attention_formula() -> None:
    # 8 query heads over 2 key/value heads count as 8 heads of attention
    q, kv = (2, 8, 128, 64), (2, 2, 128, 64)
    assert flops._sdpa_forward(q, kv, kv) == 2 * 2 * 8 * 128 * 128 * 128
    assert flops._sdpa_backward(q, q, kv, kv) == 2.5 * flops._sdpa_forward(q, kv, kv)


def test_the_worker_records_flops_outside_the_timed_steps() -> None:
    rec = run_cell(cell("lora", options={"r": 4}, steps=2, warmup_steps=1, eval_examples=0))
    f, t = rec.flops, rec.time
    assert f.flops_per_step > 0 and f.achieved_tflops > 0
    assert f.achieved_tflops == pytest.approx(f.flops_per_step / t.step_s_median / 1e12)
    assert f.mfu is None and "CPU" in f.mfu_note  # no tensor-core peak to compare with
    # the count's extra step is neither timed nor a training step
    assert len(t.step_s) == 2 and len(rec.quality.train_loss) == 3
    # one forward and backward of a batch of the cell's shape: what counting it directly gives
    counted, _, _ = _count("lora", {"r": 4})
    assert f.flops_per_step == counted


def test_the_chunked_loss_counts_the_lm_head_forward_once() -> None:
    """The chunked loss checkpoints each slice's head forward, which FlopCounterMode then counts again
    in backward: the record takes that out, counting what the same slices without checkpointing count."""
    chunks = 4
    rec = run_cell(cell("full", steps=1, warmup_steps=0, eval_examples=0, loss="chunked", loss_chunks=chunks))
    assert rec.status == "ok", rec.error
    built = build_cell("full", loss="chunked", loss_chunks=chunks)
    batch = first_batch(built)
    checkpointed, restore = recipe.step_loss(built.model, built.plan.cell.settings)
    raw = flops.count_step_flops(built.model, batch, contextlib.nullcontext, built.trainable, checkpointed)
    restore()

    def no_recompute(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
        total = sum(recipe._slice_loss(hc, weight, bias, yc) for hc, yc in zip(h.chunk(chunks), y.chunk(chunks)))
        return total / (y != IGNORE).sum().clamp(min=1)

    plain = recipe.HeadlessLoss(built.model, no_recompute)
    same_math = flops.count_step_flops(built.model, batch, contextlib.nullcontext, built.trainable, plain)
    plain.restore()
    config = tiny_config("tiny-llama")
    rows = batch["labels"].shape[0] * (batch["labels"].shape[1] - 1)  # the hidden states fed to the loss
    recomputed = 2 * rows * config.hidden_size * config.vocab_size
    assert rec.flops.flops_per_step == same_math == raw - recomputed
    assert rec.flops.recomputed_flops_excluded == recomputed
    assert "chunked loss" in rec.flops.mfu_note and "recomputed_flops_excluded" in rec.flops.mfu_note
    assert recipe.recomputed_flops(recipe.model_loss, batch) == 0  # the standard loss recomputes nothing
