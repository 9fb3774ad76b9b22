"""LoRA through peft on a base quantized to 8 bits by bitsandbytes' LLM.int8 (Dettmers et al.,
2022): int8 weights with one scale per row, outlier features kept in 16 bits."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.errors import require
from bench.method import CellContext
from bench.registry import register_method
from methods._quant import KbitLora, KbitLoraOptions, skip_modules


@dataclass(frozen=True)
class Int8LoraOptions(KbitLoraOptions):
    threshold: float = 6.0  # LLM.int8 outlier threshold; 0 turns the 16-bit outlier path off

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.threshold >= 0, "threshold", self.threshold, "must be >= 0 (0 turns outlier handling off)")


@register_method
class Int8Lora(KbitLora):
    name = "int8_lora"
    Config = Int8LoraOptions
    description = "LoRA on an INT8 base (bitsandbytes LLM.int8, outlier threshold configurable)"

    def quantization_config(self, ctx: CellContext) -> Any:
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=self.config.threshold,
                                  llm_int8_skip_modules=skip_modules(ctx.model))

    def quant_notes(self, model: Any, ctx: CellContext) -> dict[str, Any]:
        # int8 has one absmax scale per output row, not per block
        return {"quant_type": "int8", "double_quant": False, "blocksize": None,
                "threshold": self.config.threshold}
