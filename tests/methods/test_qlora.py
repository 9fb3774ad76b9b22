"""QLoRA and INT8+LoRA on tiny random models, on the CPU: bits per parameter measured from the
tensors, a loss that goes down, the classification head kept out of quantization, the paged
optimizer's CPU fallback in the record, and option errors that name the field."""
from __future__ import annotations

import sys
from typing import Any

import pytest
import torch

from bench import schema
from bench.catalog import models
from bench.config import load_matrix
from bench.errors import ConfigError
from bench.exec.worker import run_cell
from bench.measure.weights import bits_per_param, bits_per_param_of, weights_breakdown
from bench.registry import method_class
from methods._quant import head_modules
from tests.helpers import built, cell, first_batch, losses_on_one_batch

# One layer, hidden 768: every quantized matrix is a multiple of the blocksize (64) and of the
# second-level blocksize (256 blocks), and large enough (>= 589,824 values) that the ~1 KiB of
# per-tensor tables bitsandbytes stores (code tables, offset) adds under 0.3% to the bits.
BITS_MODEL = "qlora-test-llama"
BITS_CONFIG = dict(model_type="llama", vocab_size=320, hidden_size=768, intermediate_size=1536,
                   num_hidden_layers=1, num_attention_heads=12, num_key_value_heads=12,
                   max_position_embeddings=64, tie_word_embeddings=False)

# Nominal bits per parameter, blocksize 64: the 4-bit payload plus one fp32 absmax per block;
# with double quantization an 8-bit absmax per block plus one fp32 constant per 256 blocks.
NOMINAL_BITS = {"nf4": 4 + 32 / 64, "fp4": 4 + 32 / 64,
                "nf4-dq": 4 + 8 / 64 + 32 / (64 * 256), "fp4-dq": 4 + 8 / 64 + 32 / (64 * 256)}


@pytest.fixture
def bits_model(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(models.BUILTIN, BITS_MODEL, models.BuiltinModel("QLoRA bits test", BITS_CONFIG))
    return BITS_MODEL


# ---- bits per parameter ----------------------------------------------------------------------

@pytest.mark.parametrize("variant", sorted(NOMINAL_BITS))
def test_bits_per_param(bits_model: str, variant: str) -> None:
    quant_type, _, dq = variant.partition("-")
    b = built("qlora", bits_model, {"quant_type": quant_type, "double_quant": dq == "dq"})
    w = weights_breakdown(b.model)
    # 7 quantized matrices (q, k, v, o, gate, up, down); embeddings, norms and lm_head stay unquantized
    assert w["quantized_params"] == 4 * 768 * 768 + 3 * 768 * 1536
    assert w["quantized_payload_bytes"] == w["quantized_params"] // 2
    assert w["unquantized_bytes"] > 0
    bits = bits_per_param_of(w)
    assert bits == pytest.approx(NOMINAL_BITS[variant], rel=0.01)
    assert bits >= NOMINAL_BITS[variant]  # the per-tensor tables only add
    assert b.plan.ctx.notes["quant"]["blocksize"] == 64


def test_int8_bits_per_param(bits_model: str) -> None:
    w = weights_breakdown(built("int8_lora", bits_model).model)
    assert w["quantized_payload_bytes"] == w["quantized_params"]  # CB shares the weight's storage
    rows = 4 * 768 + 2 * 1536 + 768  # one fp32 scale (SCB) per output row
    assert w["quant_constants_bytes"] == 4 * rows


# ---- training ----------------------------------------------------------------------------------

TRAIN_ROWS = {
    "nf4": ("qlora", {}, "adamw"),
    "nf4-dq": ("qlora", {"double_quant": True}, "adamw"),
    "nf4-dq-paged": ("qlora", {"double_quant": True}, "paged_adamw"),
    "nf4-dq-paged8": ("qlora", {"double_quant": True}, "paged_adamw8bit"),
    "fp4": ("qlora", {"quant_type": "fp4"}, "adamw"),
    "int8": ("int8_lora", {}, "adamw"),  # bitsandbytes 0.50 runs LLM.int8 on the CPU
}


@pytest.mark.parametrize("row", sorted(TRAIN_ROWS))
def test_training_step_lowers_loss(row: str) -> None:
    method, options, optimizer = TRAIN_ROWS[row]
    b = built(method, "tiny-llama", options, optimizer=optimizer)
    assert b.trainable and all(p.dtype == torch.float32 for p in b.trainable)  # LoRA factors only
    assert bits_per_param(b.model) is not None
    losses = losses_on_one_batch(b, steps=3, lr=None)  # the cell's optimizer (paged, 8-bit) at its lr
    assert losses[-1] < losses[0], losses


def test_bf16_keeps_unquantized_in_compute_dtype_unless_prepared() -> None:
    plain = built("qlora", "tiny-llama", precision="bf16")
    assert plain.model.get_input_embeddings().weight.dtype == torch.bfloat16
    assert plain.plan.ctx.notes["quant"]["compute_dtype"] == "bfloat16"
    prepared = built("qlora", "tiny-llama", {"prepare_for_kbit": True}, precision="bf16")
    assert prepared.model.get_input_embeddings().weight.dtype == torch.float32  # peft's upcast
    assert prepared.plan.ctx.notes["quant"]["prepare_for_kbit"] is True
    before, after = (weights_breakdown(m.model)["unquantized_bytes"] for m in (plain, prepared))
    assert after > before  # the cost the variant shows
    losses = losses_on_one_batch(prepared, steps=2, lr=None)
    assert losses[-1] < losses[0], losses


# ---- classification head -----------------------------------------------------------------------

@pytest.mark.parametrize("method", ["qlora", "int8_lora"])
def test_classification_head_stays_unquantized(method: str) -> None:
    b = built(method, "tiny-bert")
    assert b.plan.ctx.notes["quant"]["skip_modules"] == ["classifier"]
    head = [p for n, p in b.model.named_parameters() if ".classifier." in n]
    assert head and all(p.dtype.is_floating_point for p in head)
    assert not any(hasattr(p, "quant_state") or hasattr(p, "SCB") for p in head)
    assert weights_breakdown(b.model)["quantized_params"] > 0  # the encoder itself is quantized
    assert any(p.requires_grad for p in head)  # peft trains the new head (modules_to_save)
    losses = losses_on_one_batch(b, steps=3, lr=None)
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("model", ["tiny-bert", "tiny-llama"])  # linears with biases, and without
def test_evaluation_before_training_keeps_the_trainable_4bit_path(model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """On an AVX512-BF16 CPU bitsandbytes repacks a 4-bit weight for inference on its first forward
    without gradients, and training afterwards fails or loses gradients. This machine may lack that
    processor feature: the layers are built believing they have it, and the repacking is watched."""
    import bitsandbytes.nn.modules as bnb_modules

    from bench.measure.accuracy import evaluate

    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: True)
    repacked: list[int] = []

    def repack(data: Any, state: Any) -> Any:
        repacked.append(1)
        raise AssertionError("a 4-bit weight was repacked for CPU inference")

    monkeypatch.setattr(bnb_modules, "_convert_weight_packed_for_cpu", repack)
    b = built("qlora", model, {"r": 4, "double_quant": True})
    assert b.plan.ctx.notes["quant"]["cpu_inference_repacking"].startswith("off")
    evaluate(b.model, b.batcher, b.plan.task.test_subset(8), 8, torch.device("cpu"))
    assert repacked == []
    batch = first_batch(b)
    b.model.train()
    b.model(**batch).loss.backward()
    assert all(p.grad is not None for p in b.trainable)  # every layer's LoRA factors, the first included


def test_bf16_mixed_trains_fp32_weights_on_a_bf16_base() -> None:
    b = built("qlora", "tiny-bert", precision="bf16-mixed")
    assert b.model.get_input_embeddings().weight.dtype == torch.bfloat16  # frozen, compute dtype
    assert all(p.dtype == torch.float32 for p in b.trainable)  # LoRA factors and the copied head


@pytest.mark.parametrize(("model_type", "head"), [("bert", ("classifier",)), ("llama", ("score",)),
                                                  ("distilbert", ("pre_classifier", "classifier"))])
def test_head_modules_are_derived_from_the_class(model_type: str, head: tuple[str, ...]) -> None:
    assert head_modules(model_type) == head


# ---- whole cell: paged fallback and the quant block --------------------------------------------

def test_paged_fallback_recorded_inactive() -> None:
    rec = run_cell(cell("qlora", "tiny-llama", {"double_quant": True}, optimizer="paged_adamw8bit"))
    assert rec.status == "ok", rec.traceback or rec.error
    assert rec.optimizer.name == "paged_adamw8bit" and rec.optimizer.paged_active is False
    assert "not paged" in rec.optimizer.paged_note and "CPU" in rec.optimizer.paged_note
    asked = {"quant_type": "nf4", "double_quant": True, "blocksize": 64, "compute_dtype": "float32",
             "prepare_for_kbit": False, "skip_modules": None}
    quant = rec.quant.to_json()
    assert quant.items() >= asked.items()  # the harness adds what it measures (bits_per_param)
    # measured from the tensors (the tiny model's per-tensor tables weigh more than a real model's)
    assert rec.quant.bits_per_param == bits_per_param_of(rec.memory.weights.to_json()) > 4.5
    assert not rec.quant.extra  # every field the method reports is declared


def test_missing_bitsandbytes_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # `import bitsandbytes` now raises ImportError
    for method in ("qlora", "int8_lora"):
        rec = run_cell(cell(method, "tiny-llama"))
        assert rec.status == "unsupported"
        assert "bitsandbytes" in rec.error and repr(method) in rec.error


# ---- option validation -------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "options", "expected"), [
    ("qlora", {"target_modules": ["all-linear", "q_proj"]}, "target_modules = ['all-linear', 'q_proj']"),
    ("qlora", {"quant_type": "nf3"}, "quant_type = 'nf3'"),
    ("qlora", {"double_quant": "yes"}, "double_quant = 'yes'"),
    ("qlora", {"r": 0}, "r = 0"),
    ("int8_lora", {"threshold": -1.0}, "threshold = -1.0"),
    ("int8_lora", {"target_modules": ["all-linear"]}, "'all-linear' must be the whole value"),
])
def test_bad_options_name_field_and_value(method: str, options: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        schema.build(method_class(method).Config, options, f"{method}.options")
    assert expected in str(info.value)


def test_bad_options_fail_when_the_matrix_loads(tmp_path: Any) -> None:
    path = tmp_path / "m.toml"
    path.write_text('models = ["tiny-llama"]\ntasks = ["synthetic"]\n'
                    '[[methods]]\nmethod = "qlora"\noptions = { quant_type = "nf3" }\n')
    with pytest.raises(ConfigError, match=r"methods\[0\]\.options \(qlora\): quant_type = 'nf3'.*'nf4'"):
        load_matrix(str(path))
