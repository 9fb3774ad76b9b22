"""QLoRA (Dettmers et al., 2023): LoRA through peft on a base quantized to 4 bits (NF4 or FP4)
by bitsandbytes as it loads, optionally with double quantization of the block constants."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from bench.method import CellContext
from bench.registry import register_method
from methods._quant import KbitLora, KbitLoraOptions, first_quant_state, skip_modules


@dataclass(frozen=True)
class QLoraOptions(KbitLoraOptions):
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = False  # quantize the per-block absmax to 8 bits (second-level constants)


@register_method
class QLora(KbitLora):
    name = "qlora"
    Config = QLoraOptions
    description = ("LoRA on a 4-bit base through bitsandbytes (nf4 or fp4, double quantization on/off, "
                   "blocksize 64); optional prepare_model_for_kbit_training")

    def quantization_config(self, ctx: CellContext) -> Any:
        from transformers import BitsAndBytesConfig

        cfg = self.config
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=cfg.quant_type,
                                  bnb_4bit_use_double_quant=cfg.double_quant,
                                  bnb_4bit_compute_dtype=ctx.compute_dtype,
                                  llm_int8_skip_modules=skip_modules(ctx.model))

    def quant_notes(self, model: Any, ctx: CellContext) -> dict[str, Any]:
        state = first_quant_state(model)  # bitsandbytes picks the blocksize (64 on CUDA and CPU)
        return {"quant_type": self.config.quant_type, "double_quant": self.config.double_quant,
                "blocksize": int(state.blocksize) if state is not None else None}
