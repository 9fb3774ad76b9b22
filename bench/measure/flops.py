"""FLOPs of one real training step, counted by torch's FlopCounterMode, and model FLOPs utilisation.

The count runs on one extra forward and backward after the timed steps (and after the training
peak has been read), on the first timed batch, with no optimizer step: the weights do not change,
and the timed steps and the memory window are untouched. The optimizer's element-wise update adds
no matmul FLOPs, which is all FlopCounterMode counts (matmuls, convolutions, attention).
Frozen weights get no weight gradient, so a frozen base costs about 4N FLOPs per token instead of 6N.
With gradient checkpointing the count includes the recomputed forward (hardware FLOPs). The chunked
loss' own recompute is taken out: its checkpointed slices run the LM head's forward again in backward,
which would put ~10% on a chunked cell's count (and MFU) over the same recipe with the standard loss,
so a ladder's rungs would not compare; `recomputed_flops_excluded` says how much was taken out.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, ContextManager, Iterator

PEAK_ENV = "BENCH_PEAK_TFLOPS"

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, from the vendors' data sheets. Matched in
# order as case-insensitive substrings of torch.cuda.get_device_name, so specific names come first.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H200 NVL", 835.0), ("GH200", 989.0), ("H200", 989.0),
    ("H100", 989.0), ("H800", 989.0), ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0),
    ("L40", 181.0), ("RTX 4090", 165.0), ("A10G", 125.0), ("A10", 125.0), ("L4", 121.0),
)


def peak_tflops(device_name: str | None, cuda: bool) -> tuple[float | None, str | None]:
    """(peak TFLOP/s, why it is None or where it came from)."""
    override = os.environ.get(PEAK_ENV)
    if override:
        try:
            value = float(override)
        except ValueError:
            return None, f"{PEAK_ENV}={override!r} is not a number of TFLOP/s"
        if value > 0:
            return value, f"peak from {PEAK_ENV}"
        return None, f"{PEAK_ENV}={override!r} must be > 0"
    if not cuda:
        return None, "CPU: no tensor-core peak to compare with (set BENCH_PEAK_TFLOPS / --peak-tflops)"
    name = (device_name or "").lower()
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in name:
            return value, f"dense bf16 peak of the {key}"
    return None, f"unknown GPU {device_name!r}: no peak in the table (set --peak-tflops)"


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(x.shape) if hasattr(x, "shape") else tuple(x)


def _attention(q: Any, k: Any, v: Any) -> tuple[int, int, int, int, int, int]:
    b, h, s_q, d_q = _shape(q)
    return b, h, s_q, _shape(k)[2], d_q, _shape(v)[3]


def _sdpa_forward(q: Any, k: Any, v: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    # QK^T and PV over the query heads (grouped-query K/V are broadcast; the causal half is not
    # subtracted, as in torch's own count and Megatron's)
    b, h, s_q, s_k, d_q, d_v = _attention(q, k, v)
    return 2 * b * h * s_q * s_k * (d_q + d_v)


def _sdpa_backward(grad: Any, q: Any, k: Any, v: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    # recompute QK^T; dV and dP from the output gradient; dQ and dK from dS (torch's five matmuls)
    b, h, s_q, s_k, d_q, d_v = _attention(q, k, v)
    return 2 * b * h * s_q * s_k * (3 * d_q + 2 * d_v)


def custom_formulas() -> dict[Any, Callable[..., int]]:
    """Formulas torch's table lacks or gets wrong here: SDPA with grouped-query heads (older torch
    asserts equal heads) and the CPU flash kernel."""
    import torch

    aten = torch.ops.aten
    table: dict[Any, Callable[..., int]] = {}
    for name in ("_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
                 "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu"):
        for op, fn in ((name, _sdpa_forward), (name + "_backward", _sdpa_backward)):
            packet = getattr(aten, op, None)  # FlopCounterMode keys on the packet, not the overload
            if packet is not None:
                table[packet] = fn
    return table


def is_quantized_linear(module: Any) -> bool:
    """A bitsandbytes 4-bit or 8-bit linear layer, recognised by its weight (duck-typed, as in
    trackers/weights.py): a 4-bit weight carries a `quant_state`; an 8-bit one is int8 data with an
    `SCB` attribute (its row scales, which the layer's first forward moves into the layer's state)."""
    import torch

    weight = getattr(module, "weight", None)
    if not isinstance(module, torch.nn.Linear) or weight is None:
        return False
    return getattr(weight, "quant_state", None) is not None or (hasattr(weight, "SCB") and weight.dtype == torch.int8)


@contextlib.contextmanager
def logical_quantized_linears(model: Any) -> Iterator[int]:
    """Inside this block every quantized linear computes through a dense weight of its logical
    [out, in] shape, so torch's own matmul formulas count it exactly like the unquantized layer:
    2*rows*in*out forward, the same again for the input gradient when the input needs one, and no
    weight gradient (the weight is frozen). The kernels bitsandbytes picks (custom ops whose names
    change between releases, CPU kernels chosen by processor features) then never decide the
    count. The weight is zeros: the values do not matter to a count, and nothing is trained here.
    Yields the number of layers replaced."""
    import torch
    import torch.nn.functional as F

    layers = [m for m in model.modules() if is_quantized_linear(m)]

    def logical(module: Any) -> Callable[..., Any]:
        def forward(x: Any, *args: Any, **kwargs: Any) -> Any:
            weight = torch.zeros(module.out_features, module.in_features, dtype=x.dtype, device=x.device)
            bias = None if module.bias is None else module.bias.to(x.dtype)
            return F.linear(x, weight, bias)
        return forward

    saved = [(m, m.__dict__.get("forward")) for m in layers]  # an instance-level forward (accelerate's hooks)
    for m in layers:
        m.forward = logical(m)
    try:
        yield len(layers)
    finally:
        for m, own in saved:
            if own is None:
                del m.forward
            else:
                m.forward = own


def count_step_flops(model: Any, batch: dict[str, Any], autocast: Callable[[], ContextManager[Any]],
                     params: list[Any], loss_fn: Callable[[Any, dict[str, Any]], Any] | None = None) -> int:
    """FLOPs of one forward and backward on `batch` (quantized linears counted from their logical
    shapes); gradients are cleared afterwards."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=custom_formulas())
    try:
        with logical_quantized_linears(model), counter:
            with autocast():
                loss = loss_fn(model, batch) if loss_fn is not None else model(**batch).loss
            loss.backward()
    finally:
        for p in params:
            p.grad = None
    return int(counter.get_total_flops())


def flops_record(counted: int | None, step_s_median: float | None, device_name: str | None,
                 cuda: bool, precision: str, checkpointing: bool, note: str | None = None,
                 recomputed: int = 0) -> dict[str, Any]:
    """The `flops` block: FLOPs per step (`counted` less the loss' `recomputed` head forward),
    achieved TFLOP/s over the median step, and MFU."""
    flops_per_step = None if counted is None else counted - recomputed
    out: dict[str, Any] = {"flops_per_step": flops_per_step, "achieved_tflops": None, "mfu": None,
                           "peak_tflops": None, "mfu_note": note,
                           "recomputed_flops_excluded": None if counted is None else recomputed}
    if flops_per_step is None:
        return out
    if step_s_median:
        out["achieved_tflops"] = flops_per_step / step_s_median / 1e12
    peak, why = peak_tflops(device_name, cuda)
    out["peak_tflops"] = peak
    notes = [why] if why else []
    if peak is not None and out["achieved_tflops"] is not None:
        out["mfu"] = out["achieved_tflops"] / peak
        if precision == "fp32":
            notes.append("this cell computes in fp32, below the bf16 peak it is compared with")
    if checkpointing:
        notes.append("gradient checkpointing: the recomputed forward is counted (hardware FLOPs)")
    if recomputed:
        notes.append(f"chunked loss: the LM head's forward its slices recompute in backward ({recomputed:.4g} FLOPs, "
                     "recomputed_flops_excluded) is not counted, so the count compares with the standard loss'")
    out["mfu_note"] = "; ".join(n for n in [note, *notes] if n) or None
    return out
