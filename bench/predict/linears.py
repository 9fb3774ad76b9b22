"""What the linears reading one input keep for the backward: frozen, training, quantized, and the
adapters hung on them (LoRA branches, bottleneck adapters, (IA)^3 vectors). Bytes per token."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from bench.build import QuantizedWeight


@dataclass(frozen=True)
class Runtime:
    """How the cell's tensors are made: under bf16 autocast or not; on CUDA or the CPU."""

    autocast: bool
    cuda: bool


class SavedPerToken:
    """Bytes per token of the tensors kept for the backward; a key names one tensor, so a tensor
    several ops save counts once."""

    def __init__(self) -> None:
        self.items: dict[str, float] = {}

    def add(self, key: str, nbytes: float) -> None:
        self.items[key] = max(self.items.get(key, 0.0), float(nbytes))

    def total(self) -> float:
        return sum(self.items.values())


@dataclass
class LinearFacts:
    """What one linear of a layer saves for the backward depends on these facts."""

    width_in: int
    width_out: int
    trains: bool  # its own weight trains
    quantized: bool
    quant_kind: str | None  # "4bit" or "int8" where quantized
    side_branches: list[tuple[int, float]]  # trainable side linears reading its input: (dtype bytes, dropout p)
    inner_linears: list[tuple[int, int]]  # other trainable linears inside it: (in_features, dtype bytes)
    scale: str | None  # a trained vector that scales the "input" or the "output" ((IA)^3)
    scale_bytes: int


def trainable_linears(module: nn.Module, skip: set[int]) -> list[nn.Linear]:
    """The linears under `module` whose weight trains, but those whose id is in `skip`."""
    from torch import nn

    return [m for m in module.modules() if isinstance(m, nn.Linear) and id(m) not in skip and m.weight.requires_grad]


def linear_facts(module: nn.Module, quantized: dict[int, QuantizedWeight], autocast: bool) -> LinearFacts:
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
    side_branches, inner_linears = [], []
    for lin in trainable_linears(module, own):
        if wrapped and lin.in_features == width_in:
            side_branches.append((lin.weight.element_size(), dropout))
        else:
            inner_linears.append((lin.in_features, 2 if autocast else lin.weight.element_size()))
    in_linears = {id(p) for lin in trainable_linears(module, own) for p in lin.parameters()}
    base_params = {id(x) for x in (base.parameters() if wrapped else [weight, getattr(module, "bias", None)])}
    vectors = [p for p in module.parameters()
               if p.requires_grad and id(p) not in in_linears and id(p) not in base_params]
    scale = None
    if vectors:  # by its length: the input's (feed-forward (IA)^3) or the output's
        scale = "input" if vectors[0].numel() == width_in and width_in != width_out else "output"
    kind = quantized[id(weight)].kind if id(weight) in quantized else None
    return LinearFacts(width_in, width_out, bool(weight.requires_grad), kind is not None, kind, side_branches,
                       inner_linears, scale, vectors[0].element_size() if vectors else 0)


def save_linear_inputs(saved: SavedPerToken, key: str, x_bytes: int, linears: dict[str, LinearFacts], prefix: str,
                       runtime: Runtime, x_grad: bool = True) -> None:
    """Linears reading one input X (`key`, `x_bytes` per element; `x_grad`: X needs a gradient).
    A frozen weight's matmul keeps nothing of X (its input gradient needs only the weight); a
    quantized one neither (bitsandbytes saves the packed weight). A training weight keeps X, or
    under autocast its own bf16 copy (autocast caches casts of weights only, so each consumer casts
    X again). On the CPU, bitsandbytes trains an 8-bit linear through MatMul8bitFp, which keeps its
    input X (`ctx.A`, unseen by saved-tensor hooks) for a weight gradient, frozen weight or not, when
    X needs a gradient (CUDA's MatMul8bitLt is not modelled so). A low-rank side branch (LoRA) keeps
    X cast to its dtype (peft casts per branch), or with dropout the dropped copy and the mask
    (CUDA's fused dropout: one byte; the CPU keeps the scaled noise in X's dtype, and only when X
    needs a gradient); its second linear keeps its own small input. A trained scaling vector ((IA)^3) keeps what it scales: X, or the output."""
    autocast = runtime.autocast
    for name, facts in linears.items():
        width = facts.width_in
        if facts.trains and not facts.quantized:
            if autocast and x_bytes != 2:
                saved.add(f"{prefix}{name}.x_bf16", 2 * width)
            else:
                saved.add(key, x_bytes * width)
        if facts.quant_kind == "int8" and not runtime.cuda and x_grad:  # the very tensor X: shared
            saved.add(key, x_bytes * width)
        for i, (branch_bytes, dropout) in enumerate(facts.side_branches):
            tag = f"{prefix}{name}.reader{i}"
            if dropout > 0:
                if x_grad:
                    saved.add(tag + ".mask", (1 if runtime.cuda else branch_bytes) * width)
                saved.add(tag + ".dropped", (2 if autocast else branch_bytes) * width)
            elif autocast:
                saved.add(tag, 2 * width)
            elif branch_bytes != x_bytes:
                saved.add(tag, branch_bytes * width)
            else:
                saved.add(key, x_bytes * width)
        for i, (in_features, nbytes) in enumerate(facts.inner_linears):
            saved.add(f"{prefix}{name}.inner{i}", nbytes * in_features)
        if facts.scale == "input":
            saved.add(key if facts.scale_bytes == x_bytes else f"{prefix}{name}.scaled_in", facts.scale_bytes * width)
        elif facts.scale == "output":
            saved.add(f"{prefix}{name}.scaled", (2 if autocast else x_bytes) * facts.width_out)
