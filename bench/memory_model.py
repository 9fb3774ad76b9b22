"""Predicted training memory of a cell, from its model config, method and settings: no weight loads.

Static parts are exact arithmetic on facts. The model is built on the meta device (no memory),
quantized the way transformers' bitsandbytes quantizer would (it replaces the same linears on a meta
model as it does before loading), and adapted by the method's own `adapt`. So the trainable set,
every dtype and the quantized layers are read, not assumed, and the harness names no method.
- parameters: unquantized ones numel x dtype; 4-bit ones a payload of 4 bits per value plus, per
  block of 64, a fp32 absmax (double quantization: a uint8 absmax, and per 256 blocks a fp32 one)
  and the per-tensor tables bitsandbytes keeps (16-entry code, and with double quantization a
  256-entry code and an offset); 8-bit ones 1 byte per value plus a fp32 scale per row.
- gradients: trainable numel x their dtype (a gradient has its parameter's dtype).
- optimizer: torch AdamW two moments in the parameter's dtype plus a fp32 step tensor per
  parameter tensor; bitsandbytes 32-bit state in fp32, 8-bit state one byte per moment plus a fp32
  absmax per 256 values (tensors under 4,096 values keep fp32 state) and two shared 256-entry maps;
  paged state of tensors of 1e5+ values lives in CUDA managed memory, outside torch's counters.
  In this harness bf16-mixed keeps fp32 weights and autocasts: no separate master copy exists.
Activations: `activations` below (formula in its docstring). The peak is the larger of the start of
the backward (everything the forward saved plus the loss' temporaries, no gradients yet: the loop
frees them every step) and the optimizer step (parameters, gradients and state).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

from bench.config import Cell

FORMULA = ("Llama-style decoder, per layer per token (Korthikanti et al. 2022 adapted to RMSNorm, SwiGLU, "
           "GQA and frozen weights; flash SDPA: no s^2 term, math/eager: fp32 probabilities): fp32 RMSNorm inputs "
           "2x(4h) [+ normalized input if the norm trains]; q,k,v,o,gate,up,down inputs only where a weight or "
           "adapter trains (autocast: one bf16 copy per consumer); SDPA q,k,v,out (+fp32 logsumexp); SwiGLU gate, "
           "act, up (3I); padded rows: K/V repeated to every head and a (b,1,s,s) mask per layer; checkpointing "
           "keeps each layer's input only. Plus the bf16 weight copies autocast keeps "
           "for the backward, and 12 bytes x vocab per position for the loss (fp32 log-probs, their gradient and "
           "the logits' gradient)")
GENERIC = ("generic transformer (Korthikanti et al. 2022): s*b*h*(34 + 5as/h) bytes per layer at 16 bits, in the "
           "activation dtype, the 5as/h term only where the attention kernel keeps probabilities; frozen weights not "
           "modelled")
LLAMA_PATHS = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
               "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
NORMS = ("input_layernorm", "post_attention_layernorm")
PAGED_MIN_NUMEL = 100_000  # bitsandbytes pages only state tensors this large
BNB_8BIT_MIN_NUMEL = 4096  # smaller tensors keep 32-bit state in the 8-bit optimizers


@dataclass
class MetaBuild:
    model: Any
    trainable: list[Any]
    quantized: dict[int, tuple[str, int, bool]]  # id(weight) -> (kind "4bit"/"int8", blocksize, double quant)
    positions: int  # sequence positions the model computes per row (virtual tokens included)
    batch_size: int
    padded: bool  # rows shorter than seq_len: attention needs a mask
    kind: str  # "causal" | "encoder"
    notes: list[str] = field(default_factory=list)


def quantized_bytes(numel: int, rows: int, kind: str, blocksize: int = 64, double_quant: bool = False) -> int:
    """Payload plus constants of one quantized weight (bitsandbytes 0.50 layout)."""
    if kind == "int8":
        return numel + 4 * rows
    blocks = math.ceil(numel / blocksize)
    total = (numel + 1) // 2 + 16 * 4  # packed 4-bit values, the 16-entry fp32 code table
    if double_quant:  # uint8 absmax, fp32 offset, second level: fp32 absmax per 256 blocks + 256-entry code
        return total + blocks + 4 + 4 * math.ceil(blocks / 256) + 256 * 4
    return total + 4 * blocks


def _bytes(p: Any) -> int:
    return p.numel() * p.element_size()


def parameter_bytes(model: Any, quantized: dict[int, tuple[str, int, bool]]) -> int:
    total = 0
    for p in model.parameters():  # shared (tied) parameters come once
        q = quantized.get(id(p))
        total += quantized_bytes(p.numel(), p.shape[0], *q) if q else _bytes(p)
    return total


def optimizer_bytes(trainable: list[Any], optimizer: str, device_type: str) -> tuple[int, int]:
    """(bytes in device memory, bytes in CUDA managed memory) of the optimizer state."""
    device = managed = 0
    shared_maps = False
    for p in trainable:
        n = p.numel()
        if optimizer == "adamw":
            device += 2 * _bytes(p) + 4
            continue
        eight_bit = optimizer.endswith("8bit") and n >= BNB_8BIT_MIN_NUMEL
        moments = 2 * n * (1 if eight_bit else 4)
        if eight_bit:
            device += 2 * 4 * math.ceil(n / 256)
            shared_maps = True
        if optimizer.startswith("paged") and device_type == "cuda" and n >= PAGED_MIN_NUMEL:
            managed += moments
        else:
            device += moments
    return device + (2 * 256 * 4 if shared_maps else 0), managed


def _quantize_on_meta(model: Any, quantization_config: Any) -> dict[int, tuple[str, int, bool]]:
    """Let transformers' own quantizer replace the linears it would quantize, then read them."""
    from transformers.quantizers import AutoHfQuantizer

    quantizer = AutoHfQuantizer.from_config(quantization_config, pre_quantized=False)
    quantizer.preprocess_model(model, device_map={"": "meta"})
    out: dict[int, tuple[str, int, bool]] = {}
    for p in model.parameters():
        if hasattr(p, "compress_statistics"):  # bitsandbytes Params4bit
            out[id(p)] = ("4bit", int(getattr(p, "blocksize", 64) or 64), bool(p.compress_statistics))
        elif hasattr(p, "SCB") and hasattr(p, "CB"):  # Int8Params
            out[id(p)] = ("int8", 0, False)
    return out


def meta_build(cell: Cell, num_labels: int | None = None, padded: bool = False) -> MetaBuild:
    """The cell's model on the meta device: loaded as the method asks, quantized, adapted."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from bench import build, models, schema
    from bench.method import CellContext
    from bench.registry import method_class
    from bench.tokenizer import ByteTokenizer, load_tokenizer

    cls = method_class(cell.method.method)
    method = cls(schema.build(cls.Config, cell.method.options, cell.method.name))
    config = copy.deepcopy(models.load_config(cell.model))
    info = models.model_info(cell.model, config)
    weights_dtype, compute_dtype = build.dtypes(cell.settings.precision, torch.device("cpu"))  # no GPU query
    meta = torch.device("meta")
    ctx = CellContext(info, cell.settings, meta, weights_dtype, compute_dtype, cell.seed)
    notes: list[str] = []
    try:
        ctx.tokenizer = load_tokenizer(*models.source(cell.model))
    except Exception:  # noqa: BLE001 - token ids only set values (a prompt's init), not sizes
        ctx.tokenizer = ByteTokenizer()
    load = method.load_kwargs(ctx)
    auto: Any = AutoModelForSequenceClassification if info.kind == "encoder" else AutoModelForCausalLM
    if info.kind == "encoder":
        config.num_labels = num_labels or 2
    with meta:
        model = auto.from_config(config, dtype=load.get("dtype", weights_dtype))
    quantized: dict[int, tuple[str, int, bool]] = {}
    if load.get("quantization_config") is not None:
        try:
            quantized = _quantize_on_meta(model, load["quantization_config"])
        except Exception as exc:  # noqa: BLE001 - predict the rest; say what is missing
            notes.append(f"quantization not modelled ({type(exc).__name__}: {exc}); weights counted unquantized")
    positions = cell.settings.seq_len
    model = method.adapt(model, ctx)
    if info.kind == "causal" and not quantized:
        try:  # virtual tokens (prompt tuning) lengthen every sequence: read it off a meta forward
            with torch.no_grad():
                ids = torch.zeros((1, cell.settings.seq_len), dtype=torch.long, device=meta)
                positions = int(model(input_ids=ids).logits.shape[1])
        except Exception as exc:  # noqa: BLE001
            notes.append(f"meta forward failed ({type(exc).__name__}); sequence length taken as seq_len")
    return MetaBuild(model, method.trainable_parameters(model), quantized, positions, cell.settings.batch_size,
                     padded, info.kind, notes)


# ---- activations ------------------------------------------------------------------------------

@dataclass
class Proj:
    """What one linear of a layer saves for the backward depends on these facts."""

    width_in: int
    width_out: int
    trains: bool  # its own weight trains
    quantized: bool
    readers: list[tuple[int, float]]  # trainable side linears reading its input: (dtype bytes, dropout p)
    inner: list[tuple[int, int]]  # other trainable linears inside it: (in_features, dtype bytes)
    scale: str | None  # a trained vector that scales the "input" or the "output" ((IA)^3)
    scale_bytes: int


def _trainable_linears(module: Any, skip: set[int]) -> list[Any]:
    from torch import nn

    return [m for m in module.modules() if isinstance(m, nn.Linear) and id(m) not in skip and m.weight.requires_grad]


def _proj(module: Any, quantized: dict[int, Any], autocast: bool) -> Proj:
    """Facts of one linear: a peft wrapper keeps the original as `base_layer`, and its trainable
    linears that take the base's input are side branches (LoRA A); every other trainable linear
    under it (LoRA B, an adapter hung on it) keeps its own input."""
    from torch import nn

    wrapped = hasattr(module, "base_layer")
    base = module.base_layer if wrapped else module
    weight = base.weight
    rows, cols = (weight.shape[0], weight.shape[1]) if weight.dim() == 2 else (base.out_features, base.in_features)
    width_in, width_out = getattr(base, "in_features", cols), getattr(base, "out_features", rows)
    own = {id(m) for m in base.modules()} if wrapped else {id(module)}
    dropout = max((m.p for m in module.modules() if isinstance(m, nn.Dropout) and id(m) not in own), default=0.0)
    readers, inner = [], []
    for lin in _trainable_linears(module, own):
        if wrapped and lin.in_features == width_in:
            readers.append((lin.weight.element_size(), dropout))
        else:
            inner.append((lin.in_features, 2 if autocast else lin.weight.element_size()))
    in_linears = {id(p) for lin in _trainable_linears(module, own) for p in lin.parameters()}
    base_params = {id(x) for x in (base.parameters() if wrapped else [weight, getattr(module, "bias", None)])}
    vectors = [p for p in module.parameters()
               if p.requires_grad and id(p) not in in_linears and id(p) not in base_params]
    scale = None
    if vectors:  # by its length: the input's (feed-forward (IA)^3) or the output's
        scale = "input" if vectors[0].numel() == width_in and width_in != width_out else "output"
    return Proj(width_in, width_out, bool(weight.requires_grad), id(weight) in quantized, readers, inner,
                scale, vectors[0].element_size() if vectors else 0)


def _layers(model: Any, num_layers: int) -> Any:
    from torch import nn

    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == num_layers]
    return lists[0] if lists else None


class Saved:
    """Bytes per token of the tensors kept for the backward; a key names one tensor, so a tensor
    several ops save counts once."""

    def __init__(self) -> None:
        self.items: dict[str, float] = {}

    def add(self, key: str, nbytes: float) -> None:
        self.items[key] = max(self.items.get(key, 0.0), float(nbytes))

    def total(self) -> float:
        return sum(self.items.values())


@dataclass(frozen=True)
class Flow:
    """How tensors are made in this cell: autocast on or off; on CUDA or the CPU."""

    autocast: bool
    cuda: bool


def _group(saved: Saved, key: str, x_bytes: int, projs: dict[str, Proj], prefix: str, flow: Flow,
           x_grad: bool = True) -> None:
    """Linears reading one input X (`key`, `x_bytes` per element; `x_grad`: X needs a gradient).
    A frozen weight's matmul keeps nothing of X (its input gradient needs only the weight); a
    quantized one neither (bitsandbytes saves the packed weight). A training weight keeps X, or
    under autocast its own bf16 copy (autocast caches casts of weights only, so each consumer casts
    X again). A low-rank side branch (LoRA) keeps X cast to its dtype (peft casts per branch), or
    with dropout the dropped copy and the mask (CUDA's fused dropout: one byte; the CPU keeps the
    scaled noise in X's dtype, and only when X needs a gradient); its second linear keeps its own
    small input. A trained scaling vector ((IA)^3) keeps what it scales: X, or the output."""
    autocast = flow.autocast
    for name, p in projs.items():
        w = p.width_in
        if p.trains and not p.quantized:
            if autocast and x_bytes != 2:
                saved.add(f"{prefix}{name}.x_bf16", 2 * w)
            else:
                saved.add(key, x_bytes * w)
        for i, (lora_bytes, dropout) in enumerate(p.readers):
            tag = f"{prefix}{name}.reader{i}"
            if dropout > 0:
                if x_grad:
                    saved.add(tag + ".mask", (1 if flow.cuda else lora_bytes) * w)
                saved.add(tag + ".dropped", (2 if autocast else lora_bytes) * w)
            elif autocast:
                saved.add(tag, 2 * w)
            elif lora_bytes != x_bytes:
                saved.add(tag, lora_bytes * w)
            else:
                saved.add(key, x_bytes * w)
        for i, (width, nbytes) in enumerate(p.inner):
            saved.add(f"{prefix}{name}.inner{i}", nbytes * width)
        if p.scale == "input":
            saved.add(key if p.scale_bytes == x_bytes else f"{prefix}{name}.scaled_in", p.scale_bytes * w)
        elif p.scale == "output":
            saved.add(f"{prefix}{name}.scaled", (2 if autocast else x_bytes) * p.width_out)


@dataclass
class Activations:
    saved_bytes: int  # kept by the forward for the backward, whole step
    weight_casts_bytes: int  # bf16 weight copies autocast keeps alive until the backward
    loss_bytes: int  # the loss' temporaries at the start of the backward
    recompute_bytes: int  # one layer's saved tensors, rebuilt in the backward (checkpointing)
    formula: str


def _dims(config: Any) -> tuple[int, int, int, int, int, int]:
    h, heads = int(config.hidden_size), int(config.num_attention_heads)
    kv = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or h // heads)
    inter = int(getattr(config, "intermediate_size", None) or 4 * h)
    return h, heads, kv, head_dim, inter, int(config.vocab_size)


def attention_kernel(config: Any, nbytes: int, device_type: str, padded: bool = False) -> str:
    """Which attention runs: "eager" (the model's own), else SDPA's choice. Rows that fill seq_len
    need no mask, and transformers then asks SDPA for grouped K/V (enable_gqa): CUDA serves that with
    flash attention, which needs 16-bit inputs; fp32 with grouped heads falls back to the math
    kernel; the CPU's flash kernel takes fp32 and grouped heads. Padded rows bring a mask: K/V are
    repeated to every head first, and SDPA turns the boolean mask into one in the query's dtype per
    call ("masked": the memory-efficient kernel on CUDA, flash on the CPU, both keeping that mask)."""
    if getattr(config, "_attn_implementation", "sdpa") == "eager":
        return "eager"
    if padded:
        return "masked"
    _, heads, kv, _, _, _ = _dims(config)
    if device_type == "cuda" and nbytes == 4 and kv < heads:
        return "math"
    return "flash"


def _norm_saved(saved: Saved, key: str, norm: Any, h: int, r: int, x_grad: bool) -> None:
    """RMSNorm upcasts its input to fp32 (a copy, or the stream itself when fp32) and keeps it with a
    fp32 rsqrt per token, when the input needs a gradient; the normalized input (stream dtype) only
    for the weight's gradient."""
    if x_grad:
        saved.add(key + ".x32", 4 * h + 4)
    if norm is not None and any(p.requires_grad for p in norm.parameters()):
        saved.add(key + ".y", r * h)


def _layer_saved(saved: Saved, layer: Any, pre: str, mb: MetaBuild, config: Any, flows: bool,
                 flow: Flow, r: int) -> None:
    """One Llama-style layer (Korthikanti et al.'s accounting, op by op, for this structure)."""
    h, heads, kv, hd, inter, _ = _dims(config)
    m = 2 if flow.autocast else r  # matmul outputs: bf16 under autocast, else the stream's dtype
    projs = {k: _proj(layer.get_submodule(path), mb.quantized, flow.autocast) for k, path in LLAMA_PATHS.items()}
    norm1, norm2 = (layer.get_submodule(n) for n in NORMS)
    _norm_saved(saved, pre + "norm1", norm1, h, r, flows)
    x1_grad = flows or any(p.requires_grad for p in norm1.parameters())
    _group(saved, pre + "norm1.out", r, {k: projs[k] for k in "qkv"}, pre, flow, x1_grad)
    # RoPE's multiplies keep cos and sin: one (seq, head_dim) pair per step, shared by all layers
    saved.add("rope.cos_sin", 2 * r * hd / mb.batch_size)
    kernel = attention_kernel(config, m, "cuda" if flow.cuda else "cpu", mb.padded)
    rep = heads * hd if kernel != "flash" else kv * hd  # math, eager and masked repeat K/V to every head
    for part, width in (("q", heads * hd), ("k", rep), ("v", rep)):
        saved.add(f"{pre}attn.{part}", m * width)
    if kernel in ("flash", "masked"):  # flash / memory-efficient: the output (o_proj's input), a logsumexp
        saved.add(pre + "attn.out", m * heads * hd)
        saved.add(pre + "attn.lse", 4 * heads)
        if kernel == "masked":  # (b, 1, s, s) in the query's dtype
            saved.add(pre + "attn.mask", m * mb.positions)
        out_key = pre + "attn.out"
    else:  # the probabilities over every key (fp32 in eager, plus their cast back)
        saved.add(pre + "attn.probs", (4 + (m if kernel == "eager" and m != 4 else 0)) * heads * mb.positions)
        out_key = pre + "attn.merged"  # transpose + reshape makes a new tensor for o_proj
    _group(saved, out_key, m, {"o": projs["o"]}, pre, flow)
    _norm_saved(saved, pre + "norm2", norm2, h, r, True)
    _group(saved, pre + "norm2.out", r, {k: projs[k] for k in ("gate", "up")}, pre, flow)
    for part in ("gate", "act", "up"):  # SiLU keeps its input; the product keeps both factors
        saved.add(f"{pre}mlp.{part}", m * inter)
    _group(saved, pre + "mlp.prod", m, {"down": projs["down"]}, pre, flow)
    covered = {id(x) for path in LLAMA_PATHS.values() for x in layer.get_submodule(path).modules()}
    for j, lin in enumerate(_trainable_linears(layer, set())):
        if id(lin) not in covered:  # adapters hung elsewhere in the layer keep their input
            saved.add(f"{pre}extra{j}", (2 if flow.autocast else lin.weight.element_size()) * lin.in_features)


def _weight_casts(mb: MetaBuild, skip: set[int]) -> int:
    """Under autocast with fp32 weights every linear's matmul keeps a bf16 copy of the weight for
    the backward: cached for training weights, cast per call (and saved) for frozen ones."""
    from torch import nn

    return sum(2 * m.weight.numel() for m in mb.model.modules()
               if isinstance(m, nn.Linear) and id(m.weight) not in mb.quantized and m.weight.element_size() == 4
               and id(m) not in skip)


def _final_norm(model: Any, layers: Any) -> Any:
    for module in model.modules():
        if any(child is layers for child in module.children()):
            return getattr(module, "norm", None)
    return None


def _generic(mb: MetaBuild, cell: Cell, r: int, tokens: int, loss: int, cuda: bool) -> Activations:
    """Korthikanti et al. 2022 for a standard layer: s*b*h*(34 + 5as/h) bytes at 16 bits, that is
    16 values of the activation dtype and 2 dropout masks per hidden unit, plus the attention
    probabilities (value, mask, dropped copy) where the kernel keeps them: eager attention, or
    dropout on the CPU (its flash kernel takes none). CUDA's dropout masks are one byte, the CPU's
    the dtype's size. Frozen weights are not modelled here (their linears' inputs are counted)."""
    s, config = cell.settings, mb.model.config
    h, heads = int(config.hidden_size), int(config.num_attention_heads)
    e = 2 if s.precision == "bf16-mixed" else r
    mask = 1 if cuda else e
    hidden_p = _first(config, ("hidden_dropout_prob", "resid_pdrop", "dropout"))
    attn_p = _first(config, ("attention_probs_dropout_prob", "attn_pdrop", "attention_dropout"))
    per_token = h * (16 * e + (2 * mask if hidden_p > 0 else 0))
    if getattr(config, "_attn_implementation", "sdpa") == "eager" or (not cuda and attn_p > 0):
        per_token += heads * mb.positions * (e + (mask + e if attn_p > 0 else 0))
    n = int(config.num_hidden_layers)
    if s.gradient_checkpointing:
        return Activations(tokens * r * h * n, 0, loss, tokens * per_token, GENERIC)
    casts = _weight_casts(mb, set()) if s.precision == "bf16-mixed" else 0
    return Activations(tokens * per_token * n, casts, loss, 0, GENERIC)


def _first(config: Any, names: tuple[str, ...]) -> float:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, (int, float)):
            return float(value)
    return 0.0


def activations(mb: MetaBuild, cell: Cell, device_type: str = "cuda") -> Activations:
    s = cell.settings
    config = mb.model.config
    h, _, _, _, _, vocab = _dims(config)
    flow = Flow(autocast=s.precision == "bf16-mixed", cuda=device_type == "cuda")
    r = mb.model.get_input_embeddings().weight.element_size()  # the residual stream's dtype
    tokens = s.batch_size * mb.positions
    loss = 12 * vocab * tokens if mb.kind == "causal" else 0
    layers = _layers(mb.model, int(config.num_hidden_layers))
    if layers is None or not all(_has(layers[0], p) for p in [*LLAMA_PATHS.values(), *NORMS]):
        return _generic(mb, cell, r, tokens, loss, flow.cuda)
    in_layers = {id(p) for p in layers.parameters()}
    head, final = mb.model.get_output_embeddings(), _final_norm(mb.model, layers)
    outside = {id(p) for mod in (head, final) if mod is not None for p in mod.parameters()}
    # does anything before the first layer train (embeddings, virtual tokens)? then every layer's
    # input needs a gradient; else only from the first layer that trains on
    flows = any(p.requires_grad and id(p) not in in_layers and id(p) not in outside for p in mb.model.parameters())
    saved, per_layer_max, skip = Saved(), 0.0, set()
    for i, layer in enumerate(layers):
        trains = any(p.requires_grad for p in layer.parameters())
        if not (flows or trains):
            continue
        if not flows:  # nothing upstream trains: frozen q, k, v see no gradient here
            mods = [layer.get_submodule(LLAMA_PATHS[k]) for k in "qkv"]
            skip |= {id(getattr(mod, "base_layer", mod)) for mod in mods}
        one = Saved()
        _layer_saved(one, layer, f"L{i}.", mb, config, flows, flow, r)
        per_layer_max = max(per_layer_max, one.total() - one.items.get("rope.cos_sin", 0.0))
        for key, value in one.items.items():
            saved.add(key, value)
        flows = True
    if s.gradient_checkpointing:  # each checkpointed layer keeps only its input (the stream)
        saved = _only_inputs(saved, len(layers), r * h)
    _norm_saved(saved, "final", final, h, r, True)
    if head is not None:
        _group(saved, "final.out", r, {"lm_head": _proj(head, mb.quantized, flow.autocast)}, "", flow)
    casts = _weight_casts(mb, skip) if flow.autocast and not s.gradient_checkpointing else 0
    return Activations(round(saved.total() * tokens), casts, loss,
                       round(per_layer_max * tokens) if s.gradient_checkpointing else 0, FORMULA)


def _has(module: Any, path: str) -> bool:
    try:
        module.get_submodule(path)
        return True
    except AttributeError:
        return False


def _only_inputs(saved: Saved, layers: int, input_bytes: int) -> Saved:
    kept = Saved()
    for key, value in saved.items.items():
        if not key.startswith("L"):
            kept.add(key, value)
    for i in range(layers):
        kept.add(f"L{i}.input", input_bytes)
    return kept


def predict(cell: Cell, device_type: str = "cuda", num_labels: int | None = None,
            padded: bool = False) -> dict[str, Any]:
    """The `memory.predicted` block of a cell (bytes), with the formula and the phase of the peak.
    `padded`: the batches have rows shorter than seq_len (the worker knows; `bench predict` assumes not)."""
    mb = meta_build(cell, num_labels, padded)
    s = cell.settings
    params = parameter_bytes(mb.model, mb.quantized)
    grads = sum(_bytes(p) for p in mb.trainable)
    opt, managed = optimizer_bytes(mb.trainable, s.optimizer, device_type)
    out: dict[str, Any] = {
        "parameters_bytes": params, "gradients_bytes": grads, "optimizer_bytes": opt,
        "optimizer_managed_bytes": managed, "activations_bytes": None, "other_bytes": None, "peak_bytes": None,
        "peak_phase": None, "trainable_params": sum(p.numel() for p in mb.trainable), "positions": mb.positions,
        "padded": padded,
        "formula": None, "notes": mb.notes, "detail": None}
    if not mb.trainable:
        mb.notes.append("the method trains nothing: no training peak to predict")
        return out
    act = activations(mb, cell, device_type)
    rows = 3 if mb.kind == "causal" else 2  # input_ids, attention_mask (and labels) per pre-built batch
    inputs = (s.warmup_steps + s.steps) * rows * s.batch_size * s.seq_len * 8
    static = params + opt + inputs
    phases = {"backward start": static + act.saved_bytes + act.weight_casts_bytes + act.loss_bytes,
              "optimizer step": static + grads}
    if act.recompute_bytes:
        phases["checkpoint recompute"] = static + act.saved_bytes + act.recompute_bytes + grads
    phase = max(phases, key=lambda k: phases[k])
    peak = phases[phase]
    out.update(activations_bytes=peak - static - (0 if phase == "backward start" else grads), other_bytes=inputs,
               peak_bytes=peak, peak_phase=phase, formula=act.formula,
               detail={"saved_bytes": act.saved_bytes, "weight_casts_bytes": act.weight_casts_bytes,
                       "loss_bytes": act.loss_bytes, "recompute_bytes": act.recompute_bytes})
    if managed:
        mb.notes.append("paged optimizer state (optimizer_managed_bytes) is CUDA managed memory, outside the peak")
    return out
