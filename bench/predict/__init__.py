"""Predicted training memory of a cell, from its model config, method and settings: no weight loads.

The model is built on the meta device (no memory) as `build.build_meta` makes it: in the dtype the
method loads it in, quantized the way transformers' bitsandbytes quantizer would, adapted by the
method's own `adapt`. So the trainable set, every dtype and the quantized layers are read, not
assumed, and the harness names no method. Static parts are exact arithmetic on facts (`static`);
activations follow the formula in `activations`; a multi-rank cell's figures are one rank's
(`sharding`). The peak is the larger of the start of the
backward (everything the forward saved plus the loss' temporaries, no gradients yet: the loop frees
them every step) and the optimizer step (parameters, gradients and state).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.predict.activations import Activations, BatchShape, activations
from bench.predict.sharding import shard
from bench.predict.static import optimizer_bytes, stored_parameter_bytes, tensor_bytes

if TYPE_CHECKING:
    from bench.build import MetaBuilt
    from bench.spec import Cell, Settings


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


def _peak(out: dict[str, Any], acts: Activations, settings: Settings, causal: bool) -> None:
    """Fill the activation, other and peak fields of `out` from its static fields."""
    rows = 3 if causal else 2  # input_ids, attention_mask (and labels) per pre-built batch
    inputs = (settings.warmup_steps + settings.steps) * rows * settings.batch_size * settings.seq_len * 8
    grads = out["gradients_bytes"]
    static = out["parameters_bytes"] + out["optimizer_bytes"] + inputs
    phases = {"backward start": static + acts.saved_bytes + acts.weight_casts_bytes + acts.loss_bytes,
              "optimizer step": static + grads}
    if acts.recompute_bytes:
        phases["checkpoint recompute"] = static + acts.saved_bytes + acts.recompute_bytes + grads
    phase = max(phases, key=lambda k: phases[k])
    peak = phases[phase]
    out.update(activations_bytes=peak - static - (0 if phase == "backward start" else grads), other_bytes=inputs,
               peak_bytes=peak, peak_phase=phase, formula=acts.formula,
               detail={"saved_bytes": acts.saved_bytes, "weight_casts_bytes": acts.weight_casts_bytes,
                       "loss_bytes": acts.loss_bytes, "recompute_bytes": acts.recompute_bytes})


def predict(cell: Cell, device_type: str = "cuda", padded: bool = False) -> dict[str, Any]:
    """The `memory.predicted` block of a cell (bytes), with the formula and the phase of the peak.
    `padded`: the batches have rows shorter than seq_len (the worker knows; `bench predict` assumes not)."""
    import torch

    from bench import build

    built = build.build_meta(build.plan(cell, torch.device("meta")))
    settings, notes = cell.settings, built.notes
    positions = _positions(built)
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
    acts = activations(built, BatchShape(settings.batch_size, positions, padded), device_type)
    _peak(out, acts, settings, built.plan.ctx.model.kind == "causal")
    if managed:
        notes.append("paged optimizer state (optimizer_managed_bytes) is CUDA managed memory, outside the peak")
    return out
