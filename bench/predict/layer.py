"""What the activation accounting of every layer shares, decoder (bench/predict/activations.py) and
encoder (bench/predict/encoder.py) alike: the batch's shape, the result, the model's dimensions, the
attention kernel that runs and what it keeps, and what checkpointing keeps instead."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from bench.predict.linears import Runtime, SavedPerToken

if TYPE_CHECKING:
    from bench.build import MetaBuilt


@dataclass(frozen=True)
class BatchShape:
    """One training batch as the model computes it."""

    batch_size: int
    positions: int  # sequence positions per row (virtual tokens included)
    padded: bool  # rows shorter than seq_len: attention needs a mask
    input_grad: bool | None = None  # the first layer's input needs a gradient (None: not known)


@dataclass
class Activations:
    saved_bytes: int  # kept by the forward for the backward, whole step
    weight_casts_bytes: int  # bf16 weight copies autocast keeps alive until the backward
    loss_bytes: int  # the loss' temporaries at the start of the backward
    recompute_bytes: int  # one layer's saved tensors, rebuilt in the backward (checkpointing)
    formula: str


class Dims(NamedTuple):
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int


@dataclass(frozen=True)
class LayerInputs:
    """What the accounting of every layer reads."""

    built: MetaBuilt
    shape: BatchShape
    runtime: Runtime
    stream_bytes: int  # bytes per element of the residual stream (the embeddings' dtype)

    @property
    def matmul_bytes(self) -> int:
        """Bytes per element of a matmul's output: bf16 under autocast, else the stream's dtype."""
        return 2 if self.runtime.autocast else self.stream_bytes


def _dims(config: Any) -> Dims:
    hidden, heads = int(config.hidden_size), int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    intermediate = int(getattr(config, "intermediate_size", None) or 4 * hidden)
    return Dims(hidden, heads, kv_heads, head_dim, intermediate, int(config.vocab_size))


def attention_kernel(config: Any, nbytes: int, device_type: str, padded: bool = False) -> str:
    """Which attention runs: "eager" (the model's own), else SDPA's choice. Rows that fill seq_len
    need no mask, and transformers then asks SDPA for grouped K/V (enable_gqa): CUDA serves that with
    flash attention, which needs 16-bit inputs; fp32 with grouped heads falls back to the math
    kernel; the CPU's flash kernel takes fp32 and grouped heads. Padded rows bring a mask: K/V are
    repeated to every head first, and SDPA turns the boolean mask into one in the query's dtype per
    call ("masked": the memory-efficient kernel on CUDA, flash on the CPU, both keeping that mask)."""
    if getattr(config, "_attn_implementation", "sdpa") == "eager":
        return "eager"
    if device_type == "cpu" and attention_dropout(config) > 0:  # the CPU's flash kernel takes no dropout
        return "math"
    if padded:
        return "masked"
    size = _dims(config)
    if device_type == "cuda" and nbytes == 4 and size.kv_heads < size.heads:
        return "math"
    return "flash"


def attention_dropout(config: Any) -> float:
    """The dropout on the attention probabilities in training (BERT's 0.1; Llama's 0)."""
    return _first_number(config, ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop"))


def _attention_saved(saved: SavedPerToken, prefix: str, inputs: LayerInputs) -> str:
    """The attention's own saved tensors; returns the key of the tensor o_proj reads."""
    config, shape, nbytes = inputs.built.model.config, inputs.shape, inputs.matmul_bytes
    size = _dims(config)
    kernel = attention_kernel(config, nbytes, "cuda" if inputs.runtime.cuda else "cpu", shape.padded)
    # math, eager and masked repeat K/V to every head
    kv_features = size.heads * size.head_dim if kernel != "flash" else size.kv_heads * size.head_dim
    for part, features in (("q", size.heads * size.head_dim), ("k", kv_features), ("v", kv_features)):
        saved.add(f"{prefix}attn.{part}", nbytes * features)
    if kernel in ("flash", "masked"):  # flash / memory-efficient: the output (o_proj's input), a logsumexp
        saved.add(prefix + "attn.out", nbytes * size.heads * size.head_dim)
        saved.add(prefix + "attn.lse", 4 * size.heads)
        if kernel == "masked":  # (b, 1, s, s) in the query's dtype
            saved.add(prefix + "attn.mask", nbytes * shape.positions)
        return prefix + "attn.out"
    # the probabilities over every key (fp32 in eager, plus their cast back); with dropout also its
    # mask (CUDA: one byte; the CPU: the dtype's size) and the dropped copy
    probs_bytes = 4 + (nbytes if kernel == "eager" and nbytes != 4 else 0)
    if attention_dropout(config) > 0:
        probs_bytes += (1 if inputs.runtime.cuda else nbytes) + nbytes
    saved.add(prefix + "attn.probs", probs_bytes * size.heads * shape.positions)
    return prefix + "attn.merged"  # transpose + reshape makes a new tensor for o_proj


def _first_number(config: Any, names: tuple[str, ...]) -> float:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, (int, float)):
            return float(value)
    return 0.0


def _layer_inputs_only(saved: SavedPerToken, num_layers: int, input_bytes: int, every: int = 1) -> SavedPerToken:
    """What gradient checkpointing keeps: each checkpointed layer's (every `every`-th) input instead
    of its saved tensors; the other layers keep theirs."""
    checkpointed = {f"L{i}." for i in range(0, num_layers, every)}
    kept = SavedPerToken()
    for key, value in saved.items.items():
        if not any(key.startswith(prefix) for prefix in checkpointed):
            kept.add(key, value)
    for prefix in sorted(checkpointed):
        kept.add(f"{prefix}input", input_bytes)
    return kept
