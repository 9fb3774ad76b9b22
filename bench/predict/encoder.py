"""Activation memory of a BERT-style encoder layer (BERT, RoBERTa, MiniLM: post-LayerNorm, GELU,
dropout on the hidden states and the attention probabilities), op by op as `activations` accounts a
Llama-style decoder, from the same meta model: which weights train, which are quantized, which
adapters hang where. Each op keeps its tensors only where its output needs a gradient, which
follows the layer from the first weight that trains."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.predict.layer import (Activations, LayerInputs, _attention_saved, _dims, _first_number,
                                 _layer_inputs_only)
from bench.predict.linears import SavedPerToken, linear_facts, save_linear_inputs, trainable_linears

if TYPE_CHECKING:
    from torch import nn

ENCODER_FORMULA = ("BERT-style encoder, per layer per token, op by op: q,k,v inputs only where a weight or adapter "
                   "trains; attention q,k,v,out (+fp32 logsumexp), or where dropout needs the math kernel (the CPU) "
                   "the probabilities, their dropout mask and dropped copy (heads x positions each); o's input; "
                   "dropout masks on the hidden states (CUDA: one byte, the CPU: the dtype's size); LayerNorm "
                   "inputs with fp32 mean and rstd; GELU's input; up and down inputs where they train; "
                   "bitsandbytes' CPU 8-bit path keeps each 8-bit linear's input; embedding LayerNorm and dropout "
                   "where something before the first layer trains; checkpointing keeps each layer's input only")
ENCODER_LINEARS = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
                   "o": "attention.output.dense", "up": "intermediate.dense", "down": "output.dense"}
ENCODER_NORMS = ("attention.output.LayerNorm", "output.LayerNorm")


def _trains(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def _hidden_dropout(config: Any) -> float:
    return _first_number(config, ("hidden_dropout_prob", "dropout"))


def _norm_and_dropout(saved: SavedPerToken, key: str, inputs: LayerInputs, dropped: bool, normed: bool) -> None:
    """A dropout (its mask, where its input needs a gradient) before a LayerNorm (its input and an
    fp32 mean and rstd per token, where the sum needs a gradient)."""
    hidden, runtime = _dims(inputs.built.model.config).hidden, inputs.runtime
    if dropped and _hidden_dropout(inputs.built.model.config) > 0:
        saved.add(key + ".mask", (1 if runtime.cuda else inputs.matmul_bytes) * hidden)
    if normed:
        saved.add(key + ".x", inputs.stream_bytes * hidden + 8)


def _layer_saved(saved: SavedPerToken, layer: nn.Module, prefix: str, inputs: LayerInputs, input_grad: bool) -> None:
    """One encoder layer; `input_grad`: its input needs a gradient (something upstream trains)."""
    size, runtime = _dims(inputs.built.model.config), inputs.runtime
    stream, matmul = inputs.stream_bytes, inputs.matmul_bytes
    mods = {name: layer.get_submodule(path) for name, path in ENCODER_LINEARS.items()}
    linears = {name: linear_facts(m, inputs.built.quantized, runtime.autocast) for name, m in mods.items()}
    norm1, norm2 = (layer.get_submodule(n) for n in ENCODER_NORMS)
    save_linear_inputs(saved, prefix + "x", stream, {k: linears[k] for k in "qkv"}, prefix, runtime, input_grad)
    attn_grad = input_grad or any(_trains(mods[k]) for k in "qkv")
    out_key = _attention_saved(saved, prefix, inputs) if attn_grad else prefix + "attn.merged"
    save_linear_inputs(saved, out_key, matmul, {"o": linears["o"]}, prefix, runtime, attn_grad)
    o_grad = attn_grad or _trains(mods["o"])
    sum1_grad = o_grad or input_grad
    _norm_and_dropout(saved, prefix + "norm1", inputs, o_grad, sum1_grad or _trains(norm1))
    sum1_grad = sum1_grad or _trains(norm1)
    save_linear_inputs(saved, prefix + "norm1.out", stream, {"up": linears["up"]}, prefix, runtime, sum1_grad)
    up_grad = sum1_grad or _trains(mods["up"])
    if up_grad:  # GELU keeps its input
        saved.add(prefix + "mlp.up", matmul * size.intermediate)
    save_linear_inputs(saved, prefix + "mlp.act", matmul, {"down": linears["down"]}, prefix, runtime, up_grad)
    down_grad = up_grad or _trains(mods["down"])
    _norm_and_dropout(saved, prefix + "norm2", inputs, down_grad, down_grad or sum1_grad or _trains(norm2))
    covered = {id(x) for m in mods.values() for x in m.modules()}
    for j, lin in enumerate(trainable_linears(layer, set())):
        if id(lin) not in covered:  # adapters hung elsewhere in the layer keep their input
            saved.add(f"{prefix}extra{j}", (2 if runtime.autocast else lin.weight.element_size()) * lin.in_features)


def encoder_activations(inputs: LayerInputs, layers: Any, loss: int) -> Activations:
    """The activation memory of one training step of a BERT-style encoder."""
    built, settings = inputs.built, inputs.built.plan.cell.settings
    # does anything before the first layer train (embeddings, virtual tokens)? the meta forward saw
    # whether the first layer's input needs a gradient
    input_grad = inputs.shape.input_grad
    if input_grad is None:  # no meta forward (bitsandbytes' layers): do the input embeddings train?
        input_grad = any(p.requires_grad for p in built.model.get_input_embeddings().parameters())
    saved, per_layer_max = SavedPerToken(), 0.0
    if input_grad:  # the embeddings' LayerNorm and dropout
        _norm_and_dropout(saved, "embed", inputs, True, True)
    for i, layer in enumerate(layers):
        if not (input_grad or _trains(layer)):
            continue
        layer_saved = SavedPerToken()
        _layer_saved(layer_saved, layer, f"L{i}.", inputs, input_grad)
        per_layer_max = max(per_layer_max, layer_saved.total())
        for key, value in layer_saved.items.items():
            saved.add(key, value)
        input_grad = True
    tokens = settings.batch_size * inputs.shape.positions
    recompute = 0
    if settings.gradient_checkpointing:
        hidden = _dims(built.model.config).hidden
        saved = _layer_inputs_only(saved, len(layers), inputs.stream_bytes * hidden, settings.checkpoint_every)
        recompute = round(per_layer_max * tokens)
    return Activations(round(saved.total() * tokens), 0, loss, recompute, ENCODER_FORMULA)
