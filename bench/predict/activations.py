"""Activation memory of a training step: the bytes the forward keeps for the backward.

A Llama-style decoder is accounted op by op, layer by layer (`FORMULA`), a BERT-style encoder too
(bench/predict/encoder.py); any other model gets the generic transformer formula (`GENERIC`). All
read the meta model `build.build_meta` made: which weights train and in what dtype, which are
quantized, which adapters hang on which linear.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.predict.encoder import ENCODER_LINEARS, ENCODER_NORMS, encoder_activations
from bench.predict.layer import (Activations, BatchShape, LayerInputs, _attention_saved, _dims, _first_number,
                                 _layer_inputs_only)
from bench.predict.linears import (LinearFacts, Runtime, SavedPerToken, linear_facts, save_linear_inputs,
                                   trainable_linears)
from bench.predict.static import loss_bytes

if TYPE_CHECKING:
    from torch import nn

    from bench.build import MetaBuilt

FORMULA = ("Llama-style decoder, per layer per token (Korthikanti et al. 2022 adapted to RMSNorm, SwiGLU, "
           "GQA and frozen weights; flash SDPA: no s^2 term, math/eager: fp32 probabilities): fp32 RMSNorm inputs "
           "2x(4h) [+ normalized input if the norm trains]; q,k,v,o,gate,up,down inputs only where a weight or "
           "adapter trains (autocast: one bf16 copy per consumer); SDPA q,k,v,out (+fp32 logsumexp); SwiGLU gate, "
           "act, up (3I); padded rows: K/V repeated to every head and a (b,1,s,s) mask per layer; checkpointing "
           "keeps each layer's input only. Plus the bf16 weight copies autocast keeps "
           "for the backward, and 12 bytes x vocab per position for the loss (fp32 log-probs, their gradient and "
           "the logits' gradient; loss = chunked: one slice's worth; liger: the input's gradient only); "
           "activation_offload on CUDA: saved tensors in CPU memory, one layer's at a time on the device")
GENERIC = ("generic transformer (Korthikanti et al. 2022): s*b*h*(34 + 5as/h) bytes per layer at 16 bits, in the "
           "activation dtype, the 5as/h term only where the attention kernel keeps probabilities; frozen weights not "
           "modelled")
LLAMA_LINEARS = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
                 "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
LLAMA_NORMS = ("input_layernorm", "post_attention_layernorm")


def _norm_saved(saved: SavedPerToken, key: str, norm: Any, hidden: int, stream_bytes: int, x_grad: bool) -> None:
    """RMSNorm upcasts its input to fp32 (a copy, or the stream itself when fp32) and keeps it with a
    fp32 rsqrt per token, when the input needs a gradient; the normalized input (stream dtype) only
    for the weight's gradient."""
    if x_grad:
        saved.add(key + ".x32", 4 * hidden + 4)
    if norm is not None and any(p.requires_grad for p in norm.parameters()):
        saved.add(key + ".y", stream_bytes * hidden)


def _layer_saved(saved: SavedPerToken, layer: nn.Module, prefix: str, inputs: LayerInputs, input_grad: bool) -> None:
    """One Llama-style layer (Korthikanti et al.'s accounting, op by op, for this structure);
    `input_grad`: the layer's input needs a gradient (something upstream trains)."""
    size, runtime = _dims(inputs.built.model.config), inputs.runtime
    stream, matmul = inputs.stream_bytes, inputs.matmul_bytes  # bytes per element
    linears: dict[str, LinearFacts] = {
        name: linear_facts(layer.get_submodule(path), inputs.built.quantized, runtime.autocast)
        for name, path in LLAMA_LINEARS.items()}
    norm1, norm2 = (layer.get_submodule(n) for n in LLAMA_NORMS)
    _norm_saved(saved, prefix + "norm1", norm1, size.hidden, stream, input_grad)
    normed_grad = input_grad or any(p.requires_grad for p in norm1.parameters())
    save_linear_inputs(saved, prefix + "norm1.out", stream, {k: linears[k] for k in "qkv"}, prefix, runtime,
                       normed_grad)
    # RoPE's multiplies keep cos and sin: one (seq, head_dim) pair per step, shared by all layers
    saved.add("rope.cos_sin", 2 * stream * size.head_dim / inputs.shape.batch_size)
    out_key = _attention_saved(saved, prefix, inputs)
    save_linear_inputs(saved, out_key, matmul, {"o": linears["o"]}, prefix, runtime)
    _norm_saved(saved, prefix + "norm2", norm2, size.hidden, stream, True)
    save_linear_inputs(saved, prefix + "norm2.out", stream, {k: linears[k] for k in ("gate", "up")}, prefix, runtime)
    for part in ("gate", "act", "up"):  # SiLU keeps its input; the product keeps both factors
        saved.add(f"{prefix}mlp.{part}", matmul * size.intermediate)
    save_linear_inputs(saved, prefix + "mlp.prod", matmul, {"down": linears["down"]}, prefix, runtime)
    covered = {id(x) for path in LLAMA_LINEARS.values() for x in layer.get_submodule(path).modules()}
    for j, lin in enumerate(trainable_linears(layer, set())):
        if id(lin) not in covered:  # adapters hung elsewhere in the layer keep their input
            saved.add(f"{prefix}extra{j}", (2 if runtime.autocast else lin.weight.element_size()) * lin.in_features)


def _weight_casts(built: MetaBuilt, no_grad_linears: set[int]) -> int:
    """Under autocast with fp32 weights every linear's matmul keeps a bf16 copy of the weight for
    the backward: cached for training weights, cast per call (and saved) for frozen ones; a frozen
    linear whose input needs no gradient (`no_grad_linears`) keeps none."""
    from torch import nn

    return sum(2 * m.weight.numel() for m in built.model.modules()
               if isinstance(m, nn.Linear) and id(m.weight) not in built.quantized and m.weight.element_size() == 4
               and id(m) not in no_grad_linears)


def _decoder_layers(model: nn.Module, num_layers: int) -> Any:
    from torch import nn

    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == num_layers]
    return lists[0] if lists else None


def _final_norm(model: nn.Module, layers: Any) -> Any:
    for module in model.modules():
        if any(child is layers for child in module.children()):
            return getattr(module, "norm", None)
    return None


def _has_submodule(module: nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
        return True
    except AttributeError:
        return False


def _generic(built: MetaBuilt, shape: BatchShape, stream_bytes: int, tokens: int, loss: int,
             cuda: bool) -> Activations:
    """Korthikanti et al. 2022 for a standard layer: s*b*h*(34 + 5as/h) bytes at 16 bits, that is
    16 values of the activation dtype and 2 dropout masks per hidden unit, plus the attention
    probabilities (value, mask, dropped copy) where the kernel keeps them: eager attention, or
    dropout on the CPU (its flash kernel takes none). CUDA's dropout masks are one byte, the CPU's
    the dtype's size. Frozen weights are not modelled here (their linears' inputs are counted)."""
    settings, config = built.plan.cell.settings, built.model.config
    hidden, heads = int(config.hidden_size), int(config.num_attention_heads)
    act_bytes = 2 if settings.precision == "bf16-mixed" else stream_bytes
    mask_bytes = 1 if cuda else act_bytes
    hidden_p = _first_number(config, ("hidden_dropout_prob", "resid_pdrop", "dropout"))
    attn_p = _first_number(config, ("attention_probs_dropout_prob", "attn_pdrop", "attention_dropout"))
    per_token = hidden * (16 * act_bytes + (2 * mask_bytes if hidden_p > 0 else 0))
    if getattr(config, "_attn_implementation", "sdpa") == "eager" or (not cuda and attn_p > 0):
        per_token += heads * shape.positions * (act_bytes + (mask_bytes + act_bytes if attn_p > 0 else 0))
    num_layers = int(config.num_hidden_layers)
    if settings.gradient_checkpointing:
        every = settings.checkpoint_every
        kept = -(-num_layers // every)  # checkpointed layers keep their input, the others everything
        return Activations(tokens * (stream_bytes * hidden * kept + per_token * (num_layers - kept)), 0, loss,
                           tokens * per_token, GENERIC)
    casts = _weight_casts(built, set()) if settings.precision == "bf16-mixed" else 0
    return Activations(tokens * per_token * num_layers, casts, loss, 0, GENERIC)


def _layers_saved(inputs: LayerInputs, layers: Any, outside: set[int]) -> tuple[SavedPerToken, float, set[int]]:
    """Every layer's saved tensors, the largest one layer keeps, and the frozen linears whose input
    needs no gradient (`outside`: the parameters after the last layer)."""
    model = inputs.built.model
    in_layers = {id(p) for p in layers.parameters()}
    # does anything before the first layer train (embeddings, virtual tokens)? then every layer's
    # input needs a gradient; else only from the first layer that trains on
    input_grad = any(p.requires_grad and id(p) not in in_layers and id(p) not in outside for p in model.parameters())
    saved, per_layer_max, no_grad_linears = SavedPerToken(), 0.0, set()
    for i, layer in enumerate(layers):
        trains = any(p.requires_grad for p in layer.parameters())
        if not (input_grad or trains):
            continue
        if not input_grad:  # nothing upstream trains: frozen q, k, v see no gradient here
            qkv = [layer.get_submodule(LLAMA_LINEARS[k]) for k in "qkv"]
            no_grad_linears |= {id(getattr(mod, "base_layer", mod)) for mod in qkv}
        layer_saved = SavedPerToken()
        _layer_saved(layer_saved, layer, f"L{i}.", inputs, input_grad)
        per_layer_max = max(per_layer_max, layer_saved.total() - layer_saved.items.get("rope.cos_sin", 0.0))
        for key, value in layer_saved.items.items():
            saved.add(key, value)
        input_grad = True
    return saved, per_layer_max, no_grad_linears


def activations(built: MetaBuilt, shape: BatchShape, device_type: str = "cuda") -> Activations:
    """The activation memory of one training step of the meta-built model on batches of `shape`."""
    settings, model = built.plan.cell.settings, built.model
    size = _dims(model.config)
    runtime = Runtime(autocast=settings.precision == "bf16-mixed", cuda=device_type == "cuda")
    stream_bytes = model.get_input_embeddings().weight.element_size()  # the residual stream's dtype
    tokens = settings.batch_size * shape.positions
    causal = built.plan.ctx.model.kind == "causal"
    loss = loss_bytes(settings, size.vocab, size.hidden, stream_bytes, tokens) if causal else 0
    layers = _decoder_layers(model, int(model.config.num_hidden_layers))
    if layers is not None and all(_has_submodule(layers[0], p) for p in [*ENCODER_LINEARS.values(), *ENCODER_NORMS]):
        return encoder_activations(LayerInputs(built, shape, runtime, stream_bytes), layers, loss)
    if layers is None or not all(_has_submodule(layers[0], p) for p in [*LLAMA_LINEARS.values(), *LLAMA_NORMS]):
        return _generic(built, shape, stream_bytes, tokens, loss, runtime.cuda)
    head, final = model.get_output_embeddings(), _final_norm(model, layers)
    outside = {id(p) for mod in (head, final) if mod is not None for p in mod.parameters()}
    inputs = LayerInputs(built, shape, runtime, stream_bytes)
    saved, per_layer_max, no_grad_linears = _layers_saved(inputs, layers, outside)
    if settings.gradient_checkpointing:  # each checkpointed layer keeps only its input (the stream)
        saved = _layer_inputs_only(saved, len(layers), stream_bytes * size.hidden, settings.checkpoint_every)
    _norm_saved(saved, "final", final, size.hidden, stream_bytes, True)
    if head is not None:
        save_linear_inputs(saved, "final.out", stream_bytes,
                           {"lm_head": linear_facts(head, built.quantized, runtime.autocast)}, "", runtime)
    casts = _weight_casts(built, no_grad_linears) if runtime.autocast and not settings.gradient_checkpointing else 0
    recompute = round(per_layer_max * tokens) if settings.gradient_checkpointing else 0
    saved_bytes = round(saved.total() * tokens)
    if settings.activation_offload and runtime.cuda:  # saved tensors wait in CPU memory
        saved_bytes, recompute = 0, max(recompute, round(per_layer_max * tokens))
    return Activations(saved_bytes, casts, loss, recompute, FORMULA)
