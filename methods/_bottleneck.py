"""Bottleneck adapters (Houlsby et al., 2019; Pfeiffer et al., 2020), shared by houlsby.py and
pfeiffer.py (not a method: the leading underscore keeps it out of discovery).

An adapter adds `up(act(down(h)))` to `h`, inserted after a sublayer's output projection and before
the residual connection. It hangs off that projection as a child module named `bottleneck` and is
applied by a forward hook, so the base weights keep their names and no model class is patched.
The blocks are found by structure: the ModuleList of transformer layers, then, inside a layer,
the first known path for each site (a small table covering Llama, Qwen2, GPT-2, BERT and
relatives). `up` starts at zero, so at step 0 the adapted model computes what the base model does.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from bench.errors import UnsupportedError, require
from bench.method import CellContext, Method, ModelInfo
from methods._structure import (
    SITES,
    find_layers,
    head_parameters,
    is_norm,
    out_width,
    resolve_site,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

Activation = Literal["relu", "gelu", "silu", "tanh"]

ADAPTER_ATTR = "bottleneck"
DEFAULT_REDUCTION = 16.0


@dataclass(frozen=True)
class BottleneckOptions:
    m: int | None = None  # bottleneck size; give this or reduction_factor (default: reduction_factor 16)
    reduction_factor: float | None = None  # m = hidden_size // reduction_factor
    activation: Activation = "relu"
    layers: list[int] | None = None  # 0-based layer indices to adapt; None: every layer
    train_layer_norms: bool = False  # also train the norms inside the adapted layers

    def __post_init__(self) -> None:
        require(self.m is None or self.reduction_factor is None, "m", self.m,
                f"set m or reduction_factor (= {self.reduction_factor!r}), not both")
        require(self.m is None or self.m > 0, "m", self.m, "must be a positive integer")
        require(self.reduction_factor is None or self.reduction_factor > 0, "reduction_factor",
                self.reduction_factor, "must be > 0")
        if self.layers is not None:
            require(bool(self.layers), "layers", self.layers, "must name at least one layer (or be omitted for all)")
            require(all(i >= 0 for i in self.layers), "layers", self.layers, "indices must be >= 0")
            require(len(set(self.layers)) == len(self.layers), "layers", self.layers, "indices must be distinct")

    def bottleneck_size(self, hidden_size: int) -> int:
        if self.m is not None:
            return self.m
        return int(hidden_size // (self.reduction_factor or DEFAULT_REDUCTION))

    def problem(self, info: ModelInfo) -> str | None:
        """Why these options cannot apply to that model, or None."""
        if self.bottleneck_size(info.hidden_size) < 1:
            return (f"reduction_factor = {self.reduction_factor!r} leaves no bottleneck for {info.name} "
                    f"(hidden size {info.hidden_size}); use a smaller factor or set m")
        bad = [i for i in self.layers or [] if i >= info.num_layers]
        if bad:
            return f"layers {bad} do not exist in {info.name}, which has {info.num_layers} layers (0..{info.num_layers - 1})"
        return None


def _activation(name: str) -> "nn.Module":
    from torch import nn

    return {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}[name]()


def make_adapter(d: int, m: int, activation: str, dtype: "torch.dtype", device: "torch.device") -> "nn.Module":
    """down (d -> m, default init), activation, up (m -> d, zeros); the hook adds the residual."""
    from collections import OrderedDict

    import torch
    from torch import nn

    up = nn.Linear(m, d, dtype=dtype, device=device)
    with torch.no_grad():
        up.weight.zero_()
        up.bias.zero_()
    return nn.Sequential(OrderedDict(down=nn.Linear(d, m, dtype=dtype, device=device),
                                     act=_activation(activation), up=up))


def _apply_adapter(module: "nn.Module", args: Any, output: Any) -> Any:
    """Forward hook: h + adapter(h) on the site's output (the first element of a tuple output)."""
    adapter = getattr(module, ADAPTER_ATTR)
    if isinstance(output, tuple):
        return (output[0] + adapter(output[0]), *output[1:])
    return output + adapter(output)


def insert_adapters(model: "nn.Module", sites: tuple[str, ...], options: BottleneckOptions,
                    ctx: CellContext) -> dict[str, Any]:
    """Freeze the model, add an adapter at each site of each chosen layer, unfreeze what trains.
    Returns what was done (bottleneck size, number of adapters, where)."""
    info = ctx.model
    d, m = info.hidden_size, options.bottleneck_size(info.hidden_size)
    prefix, layers = find_layers(model, info.num_layers)
    chosen = options.layers if options.layers is not None else range(len(layers))
    model.requires_grad_(False)
    placed: list[str] = []
    for i in chosen:
        if i >= len(layers):
            raise UnsupportedError(f"layer {i} does not exist: {prefix} holds {len(layers)} layers")
        layer = layers[i]
        for site in sites:
            found = resolve_site(layer, site)
            if found is None:
                raise UnsupportedError(
                    f"no {site.replace('_', '-')} output found in {type(layer).__name__} ({prefix}.{i}): "
                    f"looked for {', '.join(SITES[site])}")
            path, target = found
            width = out_width(target)
            if width is not None and width != d:
                raise UnsupportedError(f"{prefix}.{i}.{path} outputs width {width}, not the hidden size {d}; "
                                       f"a {site.replace('_', '-')} adapter cannot go there")
            if hasattr(target, ADAPTER_ATTR):
                raise ValueError(f"{prefix}.{i}.{path} already has an adapter")
            target.add_module(ADAPTER_ATTR, make_adapter(d, m, options.activation, ctx.weights_dtype, ctx.device))
            target.register_forward_hook(_apply_adapter)
            placed.append(f"{prefix}.{i}.{path}")
        if options.train_layer_norms:
            for mod in layer.modules():
                if is_norm(mod):
                    mod.requires_grad_(True)
    for name in placed:
        getattr(model.get_submodule(name), ADAPTER_ATTR).requires_grad_(True)
    if info.kind == "encoder":  # a new classification head has to learn, whatever else is frozen
        for p in head_parameters(model):
            p.requires_grad_(True)
    return {"bottleneck_size": m, "adapter_count": len(placed)}


class BottleneckMethod(Method):
    """Base of the bottleneck-adapter methods; a subclass names its `sites` and its Config."""

    sites: ClassVar[tuple[str, ...]] = ()
    Config = BottleneckOptions

    def unsupported_reason(self, model: ModelInfo, settings: Any) -> str | None:
        return self.config.problem(model)

    def adapt(self, model: "nn.Module", ctx: CellContext) -> "nn.Module":
        ctx.notes.update(insert_adapters(model, self.sites, self.config, ctx))
        return model


# ---- adapter checkpoints -------------------------------------------------------------------

def adapter_state(model: "nn.Module") -> dict[str, "torch.Tensor"]:
    """Every adapter weight, plus whatever else trains (norms, the head): the tensors to keep."""
    marker = f".{ADAPTER_ATTR}."
    return {n: p for n, p in model.named_parameters() if p.requires_grad or marker in n}


def save_adapter(model: "nn.Module", path: str | Path) -> None:
    """Write the adapter weights (and the other trained weights) to a safetensors file."""
    from safetensors.torch import save_file

    tensors = {n: p.detach().contiguous().cpu() for n, p in adapter_state(model).items()}
    save_file(tensors, str(path), metadata={"format": "pt", "kind": "bench-bottleneck-adapter"})


def load_adapter(model: "nn.Module", path: str | Path) -> None:
    """Copy saved adapter weights into a model adapted the same way (same options, same base)."""
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    params = dict(model.named_parameters())
    unknown = sorted(set(tensors) - set(params))
    if unknown:
        raise ValueError(f"{path}: {len(unknown)} weight(s) have no place in this model, e.g. {unknown[0]!r}; "
                         "adapt the model with the options the adapter was trained with")
    missing = sorted(n for n in adapter_state(model) if n not in tensors and f".{ADAPTER_ATTR}." in n)
    if missing:
        raise ValueError(f"{path}: lacks {len(missing)} adapter weight(s) of this model, e.g. {missing[0]!r}")
    with torch.no_grad():
        for name, tensor in tensors.items():
            if params[name].shape != tensor.shape:
                raise ValueError(f"{path}: {name} has shape {tuple(tensor.shape)}, the model's is "
                                 f"{tuple(params[name].shape)}")
            params[name].copy_(tensor)
