"""LoRA on a base that bitsandbytes quantizes while it loads: what QLoRA (4-bit) and INT8+LoRA
share. Not a method: the leading underscore keeps it out of discovery; each subclass of
`KbitLora` in a method file is registered there and supplies only its quantization config."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.errors import UnsupportedError, require
from bench.method import CellContext, Method, ModelInfo
from methods._peft import wrap
from methods.lora import LoraOptions

if TYPE_CHECKING:
    from torch import nn

    from bench.spec import Settings


@dataclass(frozen=True)
class KbitLoraOptions(LoraOptions):
    """LoRA's options, plus whether to run peft's `prepare_model_for_kbit_training` first
    (it upcasts every non-quantized parameter to fp32: a memory cost the variant shows)."""

    prepare_for_kbit: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.target_modules, list):
            # peft reads "all-linear" only as the whole value; inside a list it is a module name
            # that matches nothing, and peft would fail after the model has loaded.
            require("all-linear" not in self.target_modules, "target_modules", self.target_modules,
                    "'all-linear' must be the whole value (target_modules = \"all-linear\"), not a list item")


def bnb_missing_reason(method: str) -> str | None:
    """Why bitsandbytes cannot be used here (not installed, or its native library fails), or None."""
    try:
        import bitsandbytes  # noqa: F401
    except (ImportError, OSError, RuntimeError) as exc:
        return (f"method {method!r} quantizes the base through the bitsandbytes package, which is not "
                f"importable ({type(exc).__name__}: {exc}); install it with `pip install bitsandbytes`")
    return None


@functools.lru_cache(maxsize=None)
def head_modules(model_type: str) -> tuple[str, ...]:
    """Names of the sequence-classification head's modules for a model type: the top-level
    children outside the base model ("classifier" for BERT, "score" for Llama, "pre_classifier"
    and "classifier" for DistilBERT). They are new, trained in full precision, and bitsandbytes
    cannot make a quantized weight require gradients, so they must stay unquantized.

    Derived from the class itself, built on the meta device from the type's default config
    (no memory, no weights), rather than a list of known names per family."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        config = AutoConfig.for_model(model_type, num_labels=2)
        with torch.device("meta"):
            model = AutoModelForSequenceClassification.from_config(config)
    except (ValueError, KeyError) as exc:
        raise UnsupportedError(
            f"cannot find the classification head of model type {model_type!r} to keep it out of "
            f"quantization: {exc}") from None
    base = model.base_model_prefix
    names = tuple(n for n, child in model.named_children()
                  if n != base and next(child.parameters(), None) is not None)
    if not names:
        raise UnsupportedError(f"model type {model_type!r}: no classification head outside the base "
                               f"model {base!r} to keep out of quantization")
    return names


def skip_modules(info: ModelInfo) -> list[str] | None:
    """Modules to keep unquantized: the head on encoders; None lets transformers keep its
    defaults (the LM head and tied embeddings), which an explicit list would replace."""
    return list(head_modules(info.model_type)) if info.kind == "encoder" else None


def first_quant_state(model: "nn.Module") -> Any:
    """The quant_state of the first 4-bit weight (duck-typed), or None."""
    for p in model.parameters():
        state = getattr(p, "quant_state", None)
        if state is not None:
            return state
    return None


def keep_training_layout(model: "nn.Module") -> int:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference; returns the layers touched.

    On a CPU with AVX512-BF16, a Linear4bit's first forward in eval mode without gradients (an
    evaluation before training) repacks its weight into an inference-only layout, for good. Training
    afterwards runs the inference kernel: no autograd through the base layer (earlier layers' LoRA
    factors get no gradient) and, where the layer has a bias, "a view of a leaf Variable ... in-place
    operation" from `result += bias`. Evaluation and training must run the same layers the same way,
    on every processor, so the repacking is switched off (the flag is read on every forward)."""
    count = 0
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
            count += 1
    return count


def dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


class KbitLora(Method):
    """Base of the quantized-base LoRA methods; subclasses implement `quantization_config`
    and `quant_notes` and are registered in their own files."""

    Config = KbitLoraOptions

    def quantization_config(self, ctx: CellContext) -> Any:
        """transformers' BitsAndBytesConfig for this cell."""
        raise NotImplementedError

    def quant_notes(self, model: "nn.Module", ctx: CellContext) -> dict[str, Any]:
        """The `quant` block of the record (what was asked for; bits per parameter is measured
        by the harness from the tensors)."""
        raise NotImplementedError

    def unsupported_reason(self, model: ModelInfo, settings: "Settings") -> str | None:
        return bnb_missing_reason(self.name)

    def load_kwargs(self, ctx: CellContext) -> dict[str, Any]:
        # Non-quantized parameters (embeddings, norms, head) load in the compute dtype, as the
        # QLoRA recipe runs; `prepare_for_kbit` upcasts them to fp32 afterwards.
        return {"quantization_config": self.quantization_config(ctx), "dtype": ctx.compute_dtype}

    def adapt(self, model: Any, ctx: CellContext) -> Any:
        import torch

        if self.config.prepare_for_kbit:
            from peft import prepare_model_for_kbit_training

            # Non-reentrant checkpointing, as the harness enables it: no input-grad hook needed.
            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=ctx.settings.gradient_checkpointing,
                gradient_checkpointing_kwargs={"use_reentrant": False})
        ctx.notes["quant"] = {**self.quant_notes(model, ctx), "compute_dtype": dtype_name(ctx.compute_dtype),
                              "prepare_for_kbit": self.config.prepare_for_kbit,
                              "skip_modules": skip_modules(ctx.model)}
        if ctx.device.type == "cpu" and keep_training_layout(model):
            ctx.notes["quant"]["cpu_inference_repacking"] = (
                "off: evaluation runs the training kernels (bitsandbytes' AVX512-BF16 inference layout "
                "would replace the trainable path after an evaluation)")
        model = wrap(model, self.config.peft_config(ctx))
        if ctx.weights_dtype == torch.float32:
            # fp32 and bf16-mixed keep trainable weights in fp32. peft upcasts the LoRA factors
            # but not a copied classification head, which loaded in the compute dtype above.
            for p in model.parameters():
                if p.requires_grad and p.dtype != torch.float32:
                    p.data = p.data.float()
        return model
