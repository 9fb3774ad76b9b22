"""Predicted training memory of a cell, from its model config, method and settings: no weight loads.

The model is built on the meta device (no memory) as `build.build_meta` makes it: in the dtype the
method loads it in, quantized the way transformers' bitsandbytes quantizer would, adapted by the
method's own `adapt`. So the trainable set, every dtype and the quantized layers are read, not
assumed, and the harness names no method. Static parts are exact arithmetic on facts (`static`);
activations follow the formula in `activations` (a BERT-style encoder's in `encoder`); a multi-rank
cell's figures are one rank's (`sharding`). On the CPU, where the headline is the process's resident
set, a quantized load from a safetensors checkpoint also keeps the checkpoint's pages of the weights
it quantized (`static.mapped_checkpoint_bytes`, in other_bytes). The peak is the larger of the start of the
backward (everything the forward saved plus the loss' temporaries, no gradients yet: the loop frees
them every step) and the optimizer step (parameters, gradients and state).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.predict.activations import Activations, BatchShape, activations
from bench.predict.sharding import shard
from bench.predict.static import (checkpoint_dtype_bytes, mapped_checkpoint_bytes, optimizer_bytes,
                                  stored_parameter_bytes, tensor_bytes)

if TYPE_CHECKING:
    from bench.build import MetaBuilt
    from bench.spec import Cell, Settings


def _first_layer_input(built: MetaBuilt) -> tuple[int, bool | None]:
    """(positions, whether it needs a gradient) of the first layer's input in a forward on the meta
    device: virtual tokens (prompt tuning) lengthen an encoder's sequences, and what trains before
    the first layer makes its input need a gradient. (seq_len, None) where the forward fails."""
    import torch

    from bench.predict.activations import _decoder_layers

    seq_len = built.plan.cell.settings.seq_len
    layers = _decoder_layers(built.model, int(built.model.config.num_hidden_layers))
    if built.quantized or layers is None:  # bitsandbytes' layers do not run on the meta device
        return seq_len, None
    seen: list[torch.Tensor] = []
    handle = layers[0].register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(args[0] if args else kwargs["hidden_states"]), with_kwargs=True)
    try:
        ids = torch.zeros((1, seq_len), dtype=torch.long, device=torch.device("meta"))
        built.model(input_ids=ids)
    except Exception:  # noqa: BLE001 - the caller predicts from seq_len
        pass
    finally:
        handle.remove()
    return (int(seen[0].shape[1]), bool(seen[0].requires_grad)) if seen else (seq_len, None)


def _positions(built: MetaBuilt) -> int:
    """Sequence positions the model computes per row: seq_len, unless virtual tokens (prompt
    tuning) lengthen every sequence, which a forward on the meta device shows."""
    import torch

    seq_len = built.plan.cell.settings.seq_len
    if built.plan.ctx.model.kind != "causal" or built.quantized:
        return seq_len
    try:
        with torch.no_grad():
            ids = torch.zeros((1, seq_len), dtype=torch.long, device=torch.device("meta"))
            return int(built.model(input_ids=ids).logits.shape[1])
    except Exception as exc:  # noqa: BLE001 - predict the rest; say what is assumed
        built.notes.append(f"meta forward failed ({type(exc).__name__}); sequence length taken as seq_len")
        return seq_len


def _peak(out: dict[str, Any], acts: Activations, settings: Settings, causal: bool, mapped: int = 0) -> None:
    """Fill the activation, other and peak fields of `out` from its static fields; `mapped`: the
    checkpoint pages a quantized load keeps resident on the CPU (`mapped_checkpoint_bytes`)."""
    rows = 3 if causal else 2  # input_ids, attention_mask (and labels) per pre-built batch
    inputs = (settings.warmup_steps + settings.steps) * rows * settings.batch_size * settings.seq_len * 8
    grads = out["gradients_bytes"]
    static = out["parameters_bytes"] + out["optimizer_bytes"] + inputs + mapped
    phases = {"backward start": static + acts.saved_bytes + acts.weight_casts_bytes + acts.loss_bytes,
              "optimizer step": static + grads}
    if acts.recompute_bytes:
        phases["checkpoint recompute"] = static + acts.saved_bytes + acts.recompute_bytes + grads
    phase = max(phases, key=lambda k: phases[k])
    peak = phases[phase]
    out.update(activations_bytes=peak - static - (0 if phase == "backward start" else grads),
               other_bytes=inputs + mapped, peak_bytes=peak, peak_phase=phase, formula=acts.formula,
               detail={"saved_bytes": acts.saved_bytes, "weight_casts_bytes": acts.weight_casts_bytes,
                       "loss_bytes": acts.loss_bytes, "recompute_bytes": acts.recompute_bytes,
                       "mapped_checkpoint_bytes": mapped})


def predict(cell: Cell, device_type: str = "cuda", padded: bool = False) -> dict[str, Any]:
    """The `memory.predicted` block of a cell (bytes), with the formula and the phase of the peak.
    `padded`: the batches have rows shorter than seq_len (the worker knows; `bench predict` assumes not)."""
    import torch

    from bench import build
    from bench.catalog import models

    built = build.build_meta(build.plan(cell, torch.device("meta")))
    settings, notes = cell.settings, built.notes
    causal = built.plan.ctx.model.kind == "causal"
    positions, input_grad = (_positions(built), None) if causal else _first_layer_input(built)
    optimizer, managed = optimizer_bytes(built.trainable, settings.optimizer, device_type)
    out: dict[str, Any] = {
        "parameters_bytes": stored_parameter_bytes(built.model, built.quantized),
        "gradients_bytes": sum(tensor_bytes(p) for p in built.trainable), "optimizer_bytes": optimizer,
        "optimizer_managed_bytes": managed, "activations_bytes": None, "other_bytes": None, "peak_bytes": None,
        "peak_phase": None, "trainable_params": sum(p.numel() for p in built.trainable), "positions": positions,
        "padded": padded, "formula": None, "notes": notes, "detail": None, "sharding": None}
    if not built.trainable:
        notes.append("the method trains nothing: no training peak to predict")
        return out
    sharding = shard(out, built, device_type)  # one rank's figures where the cell runs on several
    if sharding:
        notes.append(sharding)
    if settings.padding != "max_length":
        notes.append(f"padding = {settings.padding!r}: predicted for rows of seq_len, an upper bound")
    acts = activations(built, BatchShape(settings.batch_size, positions, padded, input_grad), device_type)
    mapped = 0
    if device_type == "cpu" and built.quantized:  # only the process's RSS sees the file's pages
        location, extra = models.source(cell.model)
        mapped = mapped_checkpoint_bytes(built.model, built.quantized,
                                         None if "gguf_file" in extra else checkpoint_dtype_bytes(location))
        if mapped:
            notes.append("the checkpoint's pages of the quantized weights stay mapped and resident "
                         "(mapped_checkpoint_bytes, in other_bytes)")
    _peak(out, acts, settings, causal, mapped)
    if managed:
        notes.append("paged optimizer state (optimizer_managed_bytes) is CUDA managed memory, outside the peak")
    return out
